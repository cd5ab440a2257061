"""Follow a log file on a node by reading it from an offset, over the node's transport.

No remote `tail -f`: a tail process would be left behind whenever the connection
dropped, and would tie the job's log to a channel. Reading by offset needs nothing on
the node, survives reconnects, and lets `tuneboard logs -f` resume from where the job
directory's copy ends.

Every line is handed out exactly once and whole: a last line still being written is held
back until its newline comes (or the job has ended: `finish`), and `offset` counts only
the lines handed out, so a follower started from it (after a reconnect, or in another
process) reads a held-back half line again, from its start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from launcher.transport.base import Transport
from launcher.transport.line_buffer import LineBuffer


class LogFollower:
    """Complete lines appended to `path` since `offset` (a partial last line waits)."""

    def __init__(self, transport: Transport, path: str, offset: int = 0) -> None:
        self._transport = transport
        self._path = path
        #: Bytes of the file read so far, and of those the ones handed out as lines.
        self._read = offset
        self._handed_out = offset
        self._ready: list[str] = []
        self._buffer = LineBuffer(self._ready.append)

    @property
    def offset(self) -> int:
        """Where the lines handed out so far end: where another follower takes over (in
        another process, or after a reconnect) without losing or splitting a line."""
        return self._handed_out

    def poll(self, max_bytes: int = 1 << 20) -> list[str]:
        """New complete lines (reads until the end of the file, in max_bytes pieces).

        A read that fails (TransportError) hands out nothing: `offset` stays where it was.
        """
        while True:
            data = self._transport.read_from(self._path, self._read, max_bytes)
            self._read += len(data)
            self._buffer.feed(data)
            if len(data) < max_bytes:
                break
        return self._take()

    def finish(self) -> list[str]:
        """Whatever is left, including a last line without a newline (the job has ended)."""
        lines = self.poll()
        self._buffer.finish()
        return lines + self._take()

    def _take(self) -> list[str]:
        lines, self._ready[:] = list(self._ready), []
        self._handed_out = self._read - self._buffer.pending_bytes
        return lines


def follow(
    follower: LogFollower,
    on_line: Callable[[str], None],
    *,
    done: Callable[[], bool],
    stop: threading.Event | None = None,
    poll_s: float = 0.25,
) -> None:
    """Call on_line for every line until done() (then drain the file) or stop is set."""
    stop = stop or threading.Event()
    while not stop.is_set():
        finished = done()  # asked before reading, so nothing written after it is missed
        for line in follower.finish() if finished else follower.poll():
            on_line(line)
        if finished:
            return
        stop.wait(poll_s)
