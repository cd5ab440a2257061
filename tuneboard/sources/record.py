"""`--record FILE`: every snapshot the sources delivered, as JSON lines with timestamps.

Line 1 is a header, `{"tuneboard_record": 1, "started_at": <epoch s>}`; every other
line is `{"t": <epoch s when delivered>, "source": <source name>, "snapshot": {...}}`
with the snapshot as tuneboard/sources/codec.py encodes it. `ReplaySource` reads it back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tuneboard.sources.codec import encode
from tuneboard.sources.snapshots import Snapshot

FORMAT_VERSION = 1


class Recorder:
    """Thread-safe: pollers of several sources write through one recorder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = open(path, "w", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self.lines = 0
        self._write_line({"tuneboard_record": FORMAT_VERSION, "started_at": time.time()})

    def _write_line(self, obj: object) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._file.flush()

    def write(self, source: str, items: Sequence[Snapshot], t: float | None = None) -> None:
        if not items:
            return
        when = time.time() if t is None else t
        with self._lock:
            for item in items:
                self._write_line({"t": round(when, 3), "source": source, "snapshot": encode(item)})
                self.lines += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
