"""Messages posted to the app from poller threads."""

from __future__ import annotations

from collections.abc import Sequence

from textual.message import Message

from tuneboard.sources.snapshots import Snapshot


class SourceBatch(Message):
    """What one poll of one source returned (posted from the poller's thread)."""

    def __init__(self, source: str, items: Sequence[Snapshot], took_s: float) -> None:
        super().__init__()
        self.source = source
        self.items = items
        self.took_s = took_s
