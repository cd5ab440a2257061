"""One thread per node: follow its torchrun log (and rank 0's metrics), notice its exit.

Each poll reads what was appended to the node's log by offset (launcher/job/log_follower.py; no
remote tail process, nothing the job depends on), then the exit file the job's wrapper
writes when torchrun ends (launcher/job/node_process.py). Every few seconds it also looks for the
job's processes by marker: processes gone without an exit file means the job was killed
outside tuneboard. A node that stops answering is reported once, then reconnected each
poll; the supervisor decides when "unreachable" has lasted too long.

Events go to one queue that the supervisor's main loop reads: the watchers never touch
the job's state themselves.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from launcher.cluster import Node
from launcher.errors import LauncherError
from launcher.job import node_process as proc
from launcher.job.log_follower import LogFollower
from launcher.transport.base import Transport

#: Seconds between two looks for the job's processes (the exit file is read every poll).
PROCESS_CHECK_S = 5.0


@dataclass(frozen=True)
class LogLines:
    node: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class MetricsLines:
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Exited:
    node: str
    #: None: the processes are gone and no exit code was recorded.
    exit_code: int | None


@dataclass(frozen=True)
class Unreachable:
    node: str
    since: float
    error: str


@dataclass(frozen=True)
class Reachable:
    node: str


Event = LogLines | MetricsLines | Exited | Unreachable | Reachable


@dataclass(frozen=True)
class WatchTarget:
    node: Node
    log_path: str
    exit_path: str
    marker: str
    #: Rank 0's metrics file, on the master only.
    metrics_path: str | None = None
    metrics_offset: int = 0


class NodeWatcher(threading.Thread):
    def __init__(
        self,
        target: WatchTarget,
        transport: Transport,
        events: queue.Queue[Event],
        reconnect: Callable[[Node], Transport],
        poll_s: float = 0.3,
    ) -> None:
        super().__init__(name=f"watch-{target.node.name}", daemon=True)
        self.target = target
        self.transport = transport
        self._events = events
        self._reconnect = reconnect
        self._poll_s = poll_s
        self._stopping = threading.Event()
        self._log = LogFollower(transport, target.log_path)
        self._metrics = (
            LogFollower(transport, target.metrics_path, target.metrics_offset)
            if target.metrics_path is not None
            else None
        )
        self._unreachable_since: float | None = None
        self._last_process_check = time.monotonic()
        #: When the node last answered a whole poll (read by the supervisor: a node that
        #: hangs inside a call sends no event at all).
        self.last_contact = time.monotonic()
        self.finished = False

    def stop(self) -> None:
        """Finish: one last read of the log and the exit file, then end."""
        self._stopping.set()

    def run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            try:
                ended = self._poll(final=stopping)
                self.last_contact = time.monotonic()
                if ended:
                    break
            except LauncherError as err:
                self._lost(err)
                if stopping:
                    break
            if stopping:
                break
            self._stopping.wait(self._poll_s)
        self.finished = True

    def _poll(self, *, final: bool) -> bool:
        """One round; True when the node's job has ended (its last lines were sent).

        Lines go out as soon as they are read: a later call of this round that fails
        must not take them along (the next follower starts after them).
        """
        if self._unreachable_since is not None:
            self._reconnected(self._reconnect(self.target.node))
        self._emit_lines(self._log.poll())
        self._send_metrics()
        code = self._exit_code()
        check_processes = final or time.monotonic() - self._last_process_check > PROCESS_CHECK_S
        if code is None and check_processes:
            self._last_process_check = time.monotonic()
            state = proc.process_state(self.transport, self.target.marker, self.target.exit_path)
            if state.running:
                return False
            code = state.exit_code
        elif code is None:
            return False
        self._emit_lines(self._log.finish())
        self._send_metrics(final=True)
        self._events.put(Exited(self.target.node.name, code))
        return True

    def _exit_code(self) -> int | None:
        text = self.transport.read_from(self.target.exit_path, 0, 64).decode(errors="replace")
        text = text.strip()
        return int(text) if text.lstrip("-").isdigit() else None

    def _emit_lines(self, lines: list[str]) -> None:
        if lines:
            self._events.put(LogLines(self.target.node.name, tuple(lines)))

    def _send_metrics(self, *, final: bool = False) -> None:
        if self._metrics is None:
            return
        lines = self._metrics.finish() if final else self._metrics.poll()
        if lines:
            self._events.put(MetricsLines(tuple(lines)))

    def _lost(self, err: LauncherError) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            self._events.put(Unreachable(self.target.node.name, time.time(), str(err)))

    def _reconnected(self, transport: Transport) -> None:
        old = self.transport
        self.transport = transport
        self._log = LogFollower(transport, self.target.log_path, self._log.offset)
        if self._metrics is not None and self.target.metrics_path is not None:
            self._metrics = LogFollower(transport, self.target.metrics_path, self._metrics.offset)
        self._unreachable_since = None
        self._events.put(Reachable(self.target.node.name))
        old.close()
