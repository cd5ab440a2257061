"""`--replay FILE`: a recording played back as a source, at recorded speed or faster.

The snapshots come out unchanged (their own `time_s`), through the same path as live
ones; the dashboard judges their age against `virtual_time()`, the recording's clock
(recording start + elapsed × speed), which stops at the last record when the file ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from tuneboard.sources.codec import CodecError, decode
from tuneboard.sources.snapshots import Snapshot, SourceStatus


class ReplayError(ValueError):
    """A file that is not a tuneboard recording."""


def read_records(path: Path) -> Generator[tuple[float, Snapshot], None, None]:
    """(t, snapshot) pairs of a recording; a bad line raises ReplayError naming it."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj: Any = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReplayError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if number == 1 and isinstance(obj, dict) and "tuneboard_record" in obj:
                continue
            if not isinstance(obj, dict) or "t" not in obj or "snapshot" not in obj:
                raise ReplayError(f'{path}:{number}: expected {{"t": ..., "snapshot": ...}}')
            try:
                yield float(obj["t"]), decode(obj["snapshot"])
            except (CodecError, TypeError, ValueError) as exc:
                raise ReplayError(f"{path}:{number}: {exc}") from None


def check_recording(path: Path) -> None:
    """Raise ReplayError with a clear message if `path` cannot be replayed."""
    if not path.is_file():
        raise ReplayError(f"--replay {str(path)!r}: no such file")
    try:
        first = next(read_records(path), None)
    except OSError as exc:
        raise ReplayError(f"--replay {str(path)!r}: {exc.strerror}") from None
    if first is None:
        raise ReplayError(f"--replay {str(path)!r}: the recording is empty")


class ReplaySource:
    def __init__(
        self,
        path: Path,
        *,
        speed: float = 1.0,
        interval_s: float = 0.2,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ReplayError(f"--speed must be positive, got {speed}")
        self.path = path
        self.speed = speed
        self._interval_s = interval_s
        self._monotonic = monotonic
        self._records = read_records(path)
        self._next: tuple[float, Snapshot] | None = next(self._records, None)
        self.t0 = self._next[0] if self._next else time.time()
        self._last_t = self.t0
        self._started: float | None = None
        self.finished = False
        self.delivered = 0

    @property
    def name(self) -> str:
        return f"replay:{self.path.name}"

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def virtual_time(self) -> float:
        """The recording's clock now: where playback is, in the recording's epoch seconds."""
        if self._started is None:
            return self.t0
        now = self.t0 + (self._monotonic() - self._started) * self.speed
        return min(now, self._last_t) if self.finished else now

    def poll(self) -> Sequence[Snapshot]:
        if self._started is None:
            self._started = self._monotonic()
        if self.finished:
            return ()
        horizon = self.virtual_time()
        out: list[Snapshot] = []
        while self._next is not None and self._next[0] <= horizon:
            self._last_t = self._next[0]
            out.append(self._next[1])
            try:
                self._next = next(self._records, None)
            except ReplayError as exc:
                self._next = None
                out.append(SourceStatus(self.name, None, self._last_t, False, str(exc)))
        if self._next is None:
            self.finished = True
            out.append(SourceStatus(self.name, None, self._last_t, False, "replay finished"))
        self.delivered += len(out)
        return out

    def close(self) -> None:
        self._records.close()
