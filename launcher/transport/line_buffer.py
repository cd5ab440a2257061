"""Bytes arriving in chunks -> complete text lines, for streaming output and log tails."""

from __future__ import annotations

from collections.abc import Callable


class LineBuffer:
    """Feed chunks; every complete line goes to `on_line` (decoded, without its newline).

    A line split across chunks (or a UTF-8 character split across them) is held until
    its newline arrives; `finish()` hands over a last line that has none.
    """

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._pending = b""

    @property
    def pending_bytes(self) -> int:
        """Bytes of a started line still waiting for its newline."""
        return len(self._pending)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        *complete, self._pending = (self._pending + data).split(b"\n")
        for raw in complete:
            self._on_line(_decode(raw))

    def finish(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, b""
            self._on_line(_decode(pending))


def _decode(raw: bytes) -> str:
    return raw.removesuffix(b"\r").decode("utf-8", errors="replace")
