"""Follow a growing text file like `tail -F`: complete lines only, rotation and truncation.

- A last line without its newline (the writer is mid-`write`) is held back until the
  newline arrives, so a half-written JSON object is never parsed.
- Rotation (the path now names another file: logrotate's rename + create) reads what is
  left of the old file, then starts the new one from its beginning.
- Truncation (the file got shorter than what was read) starts over from the beginning.
- A file that does not exist yet is simply empty; it is picked up once it appears.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

#: At most this much is read per call, so a huge file is caught up over several polls.
MAX_READ_BYTES = 4 << 20


class FileTail:
    def __init__(self, path: Path, *, tail_bytes: int | None = None) -> None:
        """`tail_bytes`: on first open of an existing file, start this many bytes before its
        end (at a line start) instead of at the beginning: logs need the tail, metrics all."""
        self.path = path
        self._tail_bytes = tail_bytes
        self._file: BinaryIO | None = None
        self._ino: tuple[int, int] | None = None
        self._pending = b""
        self._opened_before = False
        self.rotations = 0
        self.truncations = 0

    def read_lines(self) -> list[str]:
        lines: list[str] = []
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self._drain_old()
        ident = (st.st_dev, st.st_ino)
        if self._file is not None and ident != self._ino:
            lines = self._drain_old()  # rotated: finish the old file first
            self.rotations += 1
        if self._file is None:
            try:
                self._open()
            except FileNotFoundError:  # removed between stat and open
                return lines
        assert self._file is not None
        if os.fstat(self._file.fileno()).st_size < self._file.tell():
            self.truncations += 1
            self._file.seek(0)
            self._pending = b""
        lines.extend(self._split(self._file.read(MAX_READ_BYTES)))
        return lines

    def _open(self) -> None:
        self._file = open(self.path, "rb")  # noqa: SIM115 - kept open across polls
        fst = os.fstat(self._file.fileno())  # the file we opened, even if renamed since
        self._ino, size = (fst.st_dev, fst.st_ino), fst.st_size
        self._pending = b""
        first, self._opened_before = not self._opened_before, True
        if first and self._tail_bytes is not None and size > self._tail_bytes:
            self._file.seek(size - self._tail_bytes)
            self._file.readline()  # drop the partial line we landed in

    def _drain_old(self) -> list[str]:
        """Lines still unread in the file we had open (it was rotated away or removed)."""
        if self._file is None:
            return []
        lines = self._split(self._file.read())
        if self._pending:  # the old file ended without a newline: that line is complete
            lines.append(_decode(self._pending))
            self._pending = b""
        self._file.close()
        self._file = None
        self._ino = None
        return lines

    def _split(self, data: bytes) -> list[str]:
        if not data:
            return []
        *complete, self._pending = (self._pending + data).split(b"\n")
        return [_decode(raw) for raw in complete]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _decode(raw: bytes) -> str:
    return raw.removesuffix(b"\r").decode("utf-8", errors="replace")
