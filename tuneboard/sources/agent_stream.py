"""The remote agent's stream as a source: `tuneboard agent` prints one JSON line per sample.

Line format (version 1), written by tuneboard/agent.py:

    {"v": 1, "node": "gpu-03", "t": 1718000000.25, "snapshots": [{"kind": "gpus", ...}, ...]}

`AgentStreamSource` takes a `connect` callable that opens a fresh line stream (any
iterable of text lines: an SSH channel running `tuneboard agent` on a node, see
tuneboard/sources/ssh_agent.py; a subprocess's stdout in tests) and reads it in its own
thread. When the stream ends or fails it reports the node disconnected and reconnects
with exponential backoff. The dashboard marks a node stale when it has been silent for a
few intervals, whatever the reason.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tuneboard.sources.base import SourceError
from tuneboard.sources.codec import CodecError, decode, encode
from tuneboard.sources.snapshots import Snapshot, SourceStatus

AGENT_LINE_VERSION = 1
Connect = Callable[[], Iterable[str]]


def agent_line(node: str, t: float, snapshots: Sequence[Snapshot]) -> str:
    """One line of the agent's output (without the newline)."""
    obj = {
        "v": AGENT_LINE_VERSION,
        "node": node,
        "t": round(t, 3),
        "snapshots": [encode(s) for s in snapshots],
    }
    return json.dumps(obj, separators=(",", ":"))


def parse_agent_line(line: str) -> list[Snapshot]:
    """The snapshots of one agent line; raises CodecError on anything else."""
    try:
        obj: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CodecError(f"not JSON ({exc.msg}): {line[:80]!r}") from None
    if not isinstance(obj, dict) or obj.get("v") != AGENT_LINE_VERSION:
        raise CodecError(f"not a version-{AGENT_LINE_VERSION} agent line: {line[:80]!r}")
    snapshots = obj.get("snapshots")
    if not isinstance(snapshots, list):
        raise CodecError("agent line without a 'snapshots' list")
    return [decode(s) for s in snapshots]


class AgentStreamSource:
    def __init__(
        self,
        node: str,
        connect: Connect,
        *,
        interval_s: float = 1.0,
        backoff_s: tuple[float, float] = (1.0, 30.0),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self._connect = connect
        self._interval_s = interval_s
        self._backoff_s = backoff_s
        self._clock = clock
        self._queue: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stream: Iterable[str] | None = None
        self._thread: threading.Thread | None = None
        self.connects = 0
        self.bad_lines = 0

    @property
    def name(self) -> str:
        return f"agent:{self.node}"

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @property
    def connect(self) -> Connect:
        """What opens the stream (an `SshAgentConnect` for a node over SSH)."""
        return self._connect

    def _status(self, connected: bool, message: str | None) -> None:
        self._queue.put(SourceStatus(self.name, self.node, self._clock(), connected, message))

    def _read_forever(self) -> None:
        delay = self._backoff_s[0]
        while not self._stop.is_set():
            try:
                self._stream = self._connect()
                self.connects += 1
                self._status(True, None)
                got_data = self._read(self._stream)
                message = "agent stream ended"
            except (SourceError, OSError) as exc:
                got_data = False
                message = f"agent: {exc}"
            if self._stop.is_set():
                return
            self._status(False, message)
            delay = self._backoff_s[0] if got_data else min(self._backoff_s[1], delay * 2)
            self._stop.wait(delay)

    def _read(self, stream: Iterable[str]) -> bool:
        got_data = False
        for line in stream:
            if self._stop.is_set():
                return got_data
            if not line.strip():
                continue
            try:
                items = parse_agent_line(line)
            except CodecError:
                self.bad_lines += 1  # e.g. a login banner or a warning on stdout
                continue
            got_data = True
            for item in items:
                self._queue.put(item)
        return got_data

    def poll(self) -> Sequence[Snapshot]:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._read_forever, name=f"read:{self.name}", daemon=True
            )
            self._thread.start()
        out: list[Snapshot] = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._stop.set()
        for owner in (self._stream, self._connect):  # a connect may hold a connection
            closer = getattr(owner, "close", None)
            if callable(closer):
                closer()
