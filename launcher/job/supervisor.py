"""The job's supervisor: start torchrun on every node, watch, stop everything on the first failure.

It runs in the `tuneboard launch` process (foreground) or in a small process of its own on
the launching machine (`--detach`: launcher/job/detached.py); the code is the same. It is the
only writer of the job's state.json, logs and metrics mirror.

- start: one detached torchrun per node, all at once (launcher/job/node_process.py: own
  process group, pid file, exit file, the job's marker in every process's environment). A
  node that cannot start fails the job before any training runs, and the others are stopped.
- watch: a NodeWatcher thread per node (launcher/job/node_watch.py) sends log lines, rank 0's
  metrics, exits and reachability to one queue; the main loop writes them out.
- the first failure anywhere (a torchrun exits non-zero, its processes vanish, a node is
  unreachable past `node_timeout_s`) stops the job on every node: TERM to each process
  group, `grace_s`, then KILL of whatever still carries the job's marker. The root cause
  (launcher/job/root_cause.py) goes into state.json with the last lines of the failed rank.
- a stop request (Ctrl-C, SIGTERM from `tuneboard stop`, SIGHUP) does the same stop and
  ends as "stopped". Only this job's marker is ever signalled.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import ClassVar, Protocol

from launcher.cluster import Node
from launcher.errors import LauncherError
from launcher.job import node_process as proc
from launcher.job.log_mirror import JobLog
from launcher.job.node_watch import (
    Event,
    Exited,
    LogLines,
    MetricsLines,
    NodeWatcher,
    Reachable,
    Unreachable,
    WatchTarget,
)
from launcher.job.root_cause import (
    Candidate,
    choose,
    describe_exit,
    parse_failures,
    reports_failure,
    unreported_errors,
    with_error,
)
from launcher.job.store import JobDir, JobState, Progress, RootCause, process_start
from launcher.job.torchrun import JobPlan, NodeJob, argv, environment, node_marker
from launcher.transport.base import Transport
from launcher.transport.fanout import on_nodes

LAST_LINES = 20
#: How long the end of a job waits for the watchers' last reads, all together.
WATCHER_JOIN_S = 15.0
_STATE_WRITE_S = 1.0


class Sink(Protocol):
    """Where a running job is shown (the terminal, or nothing for --detach)."""

    def line(self, node: str, rank: int | None, text: str) -> None: ...

    def progress(self, progress: Progress) -> None: ...

    def event(self, text: str) -> None: ...


class NullSink:
    def line(self, node: str, rank: int | None, text: str) -> None:
        del node, rank, text

    def progress(self, progress: Progress) -> None:
        del progress

    def event(self, text: str) -> None:
        del text


@dataclass(frozen=True)
class SupervisorOptions:
    grace_s: float = 10.0
    node_timeout_s: float = 60.0
    poll_s: float = 0.3


class Supervisor:
    def __init__(
        self,
        job: JobDir,
        state: JobState,
        plan: JobPlan,
        transports: Mapping[str, Transport],
        reconnect: Callable[[Node], Transport],
        secrets: Mapping[str, str],
        sink: Sink,
        options: SupervisorOptions = SupervisorOptions(),
    ) -> None:
        self.job = job
        self.state = state
        self.plan = plan
        self._transports = dict(transports)
        self._reconnect = reconnect
        self._secrets = dict(secrets)
        self._sink = sink
        self._options = options
        self._events: queue.Queue[Event] = queue.Queue()
        self._watchers: dict[str, NodeWatcher] = {}
        self._stop_reason: str | None = None
        self._stop_requested = threading.Event()
        self._unreachable: dict[str, tuple[float, str]] = {}
        self._exits: dict[str, tuple[int | None, float]] = {}
        #: When a failure of each node was first seen (its torchrun's report, or its exit).
        self._noticed: dict[str, float] = {}
        self._stop_began: float | None = None
        self._last_write = 0.0
        self._log = JobLog(job, [n.node.name for n in plan.nodes])

    # -- control ----------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Thread- and signal-safe: the main loop stops the job at its next turn."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop_requested.set()

    def run(self) -> JobState:
        """Start every node, watch until the job ends, stop it on failure. Returns the end."""
        with self._signals():
            self._log.open()
            try:
                if self._start():
                    self._watch()
            finally:
                self._log.close()
        return self.state

    # -- start ------------------------------------------------------------------------

    def _start(self) -> bool:
        self._set(
            supervisor_pid=os.getpid(),
            supervisor_start=process_start(os.getpid()),
            supervisor_host=socket.gethostname(),
        )
        offset = self._metrics_offset()
        nodes = list(self.plan.nodes)
        results = on_nodes(nodes, lambda n: n.node, self._start_node)
        failed = [r for r in results if not r.ok]
        for r in results:
            if r.value is not None:
                self.state = self.state.with_node(r.node.name, status="running", pgid=r.value.pgid)
        if failed or self._stop_requested.is_set():
            for r in failed:
                self._sink.event(f"{r.node.name}: cannot start: {r.error}")
            first = failed[0] if failed else None
            cause = (
                RootCause(
                    first.node.name,
                    self._rank_of(first.node.name),
                    None,
                    None,
                    f"could not start torchrun: {first.error}",
                    (),
                )
                if first is not None
                else None
            )
            self._stop_all(started_only=True)
            status = "failed" if first is not None else "stopped"
            self._set(
                status=status,
                ended_at=time.time(),
                root_cause=cause,
                message=self._stop_reason if first is None else None,
            )
            return False
        self._set(status="running", started_at=time.time())
        self._sink.event(
            f"started on {len(nodes)} node(s), {self.plan.world_size} ranks: job {self.state.id}"
        )
        for node in nodes:
            files = self.plan.files(node)
            is_master = node.node_rank == 0
            target = WatchTarget(
                node.node,
                files.log,
                files.exit,
                self.plan.node_marker(node),
                self.state.metrics_path if is_master else None,
                offset if is_master else 0,
            )
            watcher = NodeWatcher(
                target,
                self._transports[node.node.name],
                self._events,
                self._reconnect,
                self._options.poll_s,
            )
            self._watchers[node.node.name] = watcher
            watcher.start()
        return True

    def _start_node(self, node: NodeJob) -> proc.DetachedProcess:
        files = self.plan.files(node)
        return proc.start_detached(
            self._transports[node.node.name],
            argv(self.plan, node),
            marker=self.plan.node_marker(node),
            pid_path=files.pid,
            log_path=files.log,
            env=environment(self.plan, node, self._secrets),
            cwd=node.workdir,
        )

    def _metrics_offset(self) -> int:
        """Size of rank 0's metrics file before this job (a resumed run appends to it)."""
        master = self._transports[self.plan.nodes[0].node.name]
        try:
            result = master.run(["wc", "-c", "--", self.state.metrics_path], timeout_s=30)
        except LauncherError:
            return 0
        head = result.stdout.split()
        return int(head[0]) if result.ok and head and head[0].isdigit() else 0

    # -- watch ------------------------------------------------------------------------

    def _watch(self) -> None:
        while True:
            if self._stop_requested.is_set():
                self._sink.event(f"stopping the job on every node: {self._stop_reason}")
                self._stop_and_finish("stopped", None)
                return
            try:
                event = self._events.get(timeout=0.2)
            except queue.Empty:
                event = None
            if event is not None:
                outcome = self._handle(event)
                if outcome is not None:
                    return
            cause = self._unreachable_too_long()
            if cause is not None:
                self._fail(cause)
                return
            if len(self._exits) == len(self.plan.nodes):
                self._finish_all_exited()
                return
            self._maybe_write()

    def _handle(self, event: Event) -> str | None:
        if isinstance(event, LogLines):
            failed = False
            for line in event.lines:
                rank = self._write_line(event.node, line)
                failed = failed or (rank is None and reports_failure(line))
            if failed:
                # torchrun reported a failed worker: stop now, ~1 s before it exits.
                self._noticed.setdefault(event.node, time.monotonic())
                self._sink.event(f"{event.node}: torchrun reports a failed rank")
                self._fail(None, event.node)
                return "failed"
        elif isinstance(event, MetricsLines):
            self._write_metrics(event.lines)
        elif isinstance(event, Unreachable):
            self._unreachable[event.node] = (time.monotonic(), event.error)
            self.state = self.state.with_node(event.node, status="unreachable")
            self._sink.event(f"{event.node}: unreachable ({event.error}); retrying")
        elif isinstance(event, Reachable):
            self._unreachable.pop(event.node, None)
            self.state = self.state.with_node(event.node, status="running")
            self._sink.event(f"{event.node}: reachable again")
        elif isinstance(event, Exited):
            self._exits[event.node] = (event.exit_code, time.monotonic())
            if event.exit_code != 0:
                self._noticed.setdefault(event.node, time.monotonic())
            self.state = self.state.with_node(
                event.node, status="exited", exit_code=event.exit_code
            )
            code = event.exit_code
            self._sink.event(
                f"{event.node}: torchrun "
                + ("ended without an exit code" if code is None else f"exited with {code}")
            )
            if code != 0:
                self._fail(None, event.node)
                return "failed"
        return None

    def _unreachable_too_long(self) -> RootCause | None:
        """A node that has not answered for node_timeout_s (its watcher's calls fail, or
        hang: a stuck node may never fail them)."""
        now = time.monotonic()
        for name, watcher in self._watchers.items():
            silent = now - watcher.last_contact
            if watcher.finished or name in self._exits or silent <= self._options.node_timeout_s:
                continue
            self._unreachable.setdefault(name, (watcher.last_contact, "no answer"))
            error = self._unreachable[name][1]
            return RootCause(
                name,
                self._rank_of(name),
                None,
                None,
                f"unreachable for {silent:.0f} s (--node-timeout {self._options.node_timeout_s:g}):"
                f" {error}",
                self._log.agent_lines(name)[-LAST_LINES:],
            )
        return None

    def _finish_all_exited(self) -> None:
        self._join_watchers()
        self._set(status="succeeded", ended_at=time.time())
        self._sink.event(f"job {self.state.id} succeeded")

    def _fail(self, cause: RootCause | None, node: str | None = None) -> None:
        first = cause.node if cause is not None else node
        self._sink.event(f"failure on {first}: stopping the job on every node")
        self._stop_and_finish("failed", cause)

    def _stop_and_finish(self, status: str, cause: RootCause | None) -> None:
        self._set(status="stopping")
        self._stop_began = time.monotonic()
        unstopped = self._stop_all(started_only=False)
        self._join_watchers()
        if status == "failed" and cause is None:
            cause = self._root_cause()
        self.state = dataclasses.replace(
            self.state,
            nodes=tuple(
                dataclasses.replace(n, status="unreachable")
                if n.name in unstopped
                else dataclasses.replace(n, status="stopped")
                if n.status in ("running", "unreachable")
                else n
                for n in self.state.nodes
            ),
        )
        message = self._stop_reason if status == "stopped" else None
        if unstopped:
            names = ", ".join(sorted(unstopped))
            message = (
                f"{message + '; ' if message else ''}could not stop the job on {names} "
                f"(unreachable): run `tuneboard stop {self.state.id}` once it answers"
            )
        self._set(status=status, ended_at=time.time(), root_cause=cause, message=message)
        if cause is not None:
            where = f"{cause.node}" + (f" rank {cause.rank}" if cause.rank is not None else "")
            self._sink.event(f"root cause: {where}: {cause.reason}")
        if unstopped:
            self._sink.event(message or "")
        self._sink.event(f"job {self.state.id} {status}")

    def _join_watchers(self) -> None:
        """Each watcher's last read; one stuck on an unreachable node is left behind."""
        for watcher in self._watchers.values():
            watcher.stop()
        deadline = time.monotonic() + WATCHER_JOIN_S
        for watcher in self._watchers.values():
            watcher.join(timeout=max(0.0, deadline - time.monotonic()))
        self._drain()

    def _stop_all(self, *, started_only: bool) -> set[str]:
        """Stop every node's part of the job at once; returns the nodes that could not be."""
        nodes = [n for n in self.state.nodes if not started_only or n.pgid is not None]

        def stop_one(name: str) -> proc.StopResult:
            watcher = self._watchers.get(name)
            transport = watcher.transport if watcher is not None else self._transports[name]
            if name in self._unreachable or not transport.is_connected():
                transport = self._reconnect(self._node_of(name))
            state = next(n for n in self.state.nodes if n.name == name)
            marker = node_marker(self.plan.marker, state.node_rank)
            return proc.stop_marker(
                transport, marker, pgid=state.pgid or 0, grace_s=self._options.grace_s
            )

        results = on_nodes([n.name for n in nodes], self._node_of, stop_one)
        failed = set()
        for r in results:
            if r.error is not None:
                failed.add(r.node.name)
                self._sink.event(f"{r.node.name}: could not stop: {r.error}")
            elif r.value is not None and r.value.left:
                self._sink.event(f"{r.node.name}: processes survived KILL: {r.value.left}")
        return failed

    def _drain(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, LogLines):
                for line in event.lines:
                    self._write_line(event.node, line)
            elif isinstance(event, MetricsLines):
                self._write_metrics(event.lines)
            elif isinstance(event, Exited):
                self._exits.setdefault(event.node, (event.exit_code, time.monotonic()))
                self.state = self.state.with_node(
                    event.node, status="exited", exit_code=event.exit_code
                )

    # -- root cause -------------------------------------------------------------------

    def _root_cause(self) -> RootCause | None:
        candidates: list[Candidate] = []
        began = self._stop_began or time.monotonic()
        for node in self.plan.nodes:
            name = node.node.name
            if name not in self._exits or self._exits[name][0] == 0:
                continue
            code = self._exits[name][0]
            before = name in self._noticed and self._noticed[name] <= began
            agent = self._log.agent_lines(name)
            failures = parse_failures(name, node.node_rank, node.first_rank, agent)
            for f in failures:
                lines = self._log.rank_lines(f.rank)
                candidates.append(
                    Candidate(
                        name,
                        node.node_rank,
                        f.rank,
                        f.exit_code,
                        f.when,
                        before,
                        lines or agent,
                        with_error(describe_exit(f.exit_code), lines or agent),
                    )
                )
            ranks = range(node.first_rank, node.first_rank + node.nproc)
            reported = {f.rank for f in failures}
            for rank, lines, error in unreported_errors(ranks, reported, self._log.rank_lines):
                reason = f"its own error, then stopped by torchrun: {error}"
                candidates.append(
                    Candidate(name, node.node_rank, rank, None, None, before, lines, reason)
                )
            if not failures:
                what = "ended without an exit code (killed outside tuneboard?)"
                candidates.append(
                    Candidate(
                        name,
                        node.node_rank,
                        None,
                        code,
                        None,
                        before,
                        agent,
                        with_error(
                            f"torchrun {what if code is None else describe_exit(code)}", agent
                        ),
                    )
                )
        chosen = choose(candidates)
        if chosen is None:
            return None
        return RootCause(
            chosen.node,
            chosen.node_rank,
            chosen.rank,
            chosen.exit_code,
            chosen.reason,
            chosen.last_lines[-LAST_LINES:],
        )

    def _rank_of(self, name: str) -> int:
        return next(n.node_rank for n in self.plan.nodes if n.node.name == name)

    def _node_of(self, name: str) -> Node:
        return next(n.node for n in self.plan.nodes if n.node.name == name)

    # -- files ------------------------------------------------------------------------

    def _write_line(self, node: str, line: str) -> int | None:
        """Write one line of a node's log and show it; returns its rank (None: torchrun's)."""
        rank, text = self._log.line(node, line)
        self._sink.line(node, rank, text)
        return rank

    def _write_metrics(self, lines: tuple[str, ...]) -> None:
        progress = self._log.metrics(lines)
        if progress is not None:
            self.state = dataclasses.replace(self.state, progress=progress)
            self._sink.progress(progress)

    def _set(self, **changes: object) -> None:
        self.state = dataclasses.replace(self.state, **changes)  # type: ignore[arg-type]
        self.job.write_state(self.state)
        self._last_write = time.monotonic()

    def _maybe_write(self) -> None:
        if time.monotonic() - self._last_write > _STATE_WRITE_S:
            self._set()

    # -- signals ----------------------------------------------------------------------

    def _signals(self) -> _SignalScope:
        return _SignalScope(self)


class _SignalScope:
    """Ctrl-C, SIGTERM and SIGHUP become a stop request while the job runs (main thread
    only; elsewhere the caller uses request_stop)."""

    NAMES: ClassVar[dict[signal.Signals, str]] = {
        signal.SIGINT: "interrupted (Ctrl-C)",
        signal.SIGTERM: "stop requested (SIGTERM)",
        signal.SIGHUP: "the launching terminal went away (SIGHUP)",
    }

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self._supervisor.request_stop(self.NAMES.get(signal.Signals(signum), f"signal {signum}"))

    def __enter__(self) -> _SignalScope:
        if threading.current_thread() is threading.main_thread():
            for sig in self.NAMES:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
