"""The one source interface, and the thread that polls a source without overlap.

A `Source` is anything with a `name`, an `interval_s` and a `poll()` that returns the
snapshots seen since the previous poll (possibly none). `poll()` may block (NVML calls,
file reads); it is only ever called from that source's `Poller` thread, so it never runs
on the UI thread, and the next poll is scheduled only after the previous one returned
(dolphie's rescheduling worker), so a slow poll delays the next instead of piling up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from tuneboard.sources.snapshots import Snapshot, SourceStatus


class Source(Protocol):
    """What the dashboard and the recorder poll."""

    @property
    def name(self) -> str: ...

    @property
    def interval_s(self) -> float: ...

    def poll(self) -> Sequence[Snapshot]: ...

    def close(self) -> None: ...


class SourceError(Exception):
    """A source that cannot read what it should (shown as a message, never a traceback)."""


Deliver = Callable[[str, Sequence[Snapshot], float], None]
"""Called from the poller thread with (source name, snapshots, poll duration in s)."""


class Poller:
    """Polls one source in its own daemon thread: poll, deliver, wait out the interval.

    A `SourceError` or `OSError` from `poll()` is delivered as a `SourceStatus` (not
    connected, with the message) and polling goes on, backing off up to `max_backoff_s`.
    """

    def __init__(
        self,
        source: Source,
        deliver: Deliver,
        *,
        clock: Callable[[], float] = time.time,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.source = source
        self._deliver = deliver
        self._clock = clock
        self._max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poll:{source.name}", daemon=True)
        self.polls = 0

    def start(self) -> Poller:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        self.source.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                items: Sequence[Snapshot] = self.source.poll()
                failures = 0
            except (SourceError, OSError) as exc:
                failures += 1
                items = (
                    SourceStatus(
                        source=self.source.name,
                        node=None,
                        time_s=self._clock(),
                        connected=False,
                        message=str(exc),
                    ),
                )
            took = time.monotonic() - started
            self.polls += 1
            if self._stop.is_set():
                break
            self._deliver(self.source.name, items, took)
            wait = self.source.interval_s
            if failures:
                wait = min(self._max_backoff_s, wait * 2 ** min(failures, 8))
            self._stop.wait(max(0.0, wait - took))
