"""Following a node's log by offset (launcher/job/log_follower.py) across polls and reconnects:
every line arrives exactly once and whole, also when it was half written at a read.

The node is this machine through the real LocalTransport; a reconnect is what the
watcher does (launcher/job/node_watch.py): a new follower on a new transport, from the old one's
offset. A lost connection is a wrapper whose next call raises TransportError.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from launcher.cluster import Node
from launcher.errors import TransportError
from launcher.job import node_watch as watch
from launcher.job.log_follower import LogFollower
from launcher.job.node_watch import (
    Event,
    Exited,
    LogLines,
    NodeWatcher,
    Reachable,
    Unreachable,
    WatchTarget,
)
from launcher.transport.base import CommandResult, CompareMode
from launcher.transport.local import LocalTransport


class Cuttable:
    """The local transport, except that once a read has returned `after` its next call
    fails, as a dropped SSH connection does (deterministically: no race with a thread)."""

    def __init__(self, inner: LocalTransport, after: bytes) -> None:
        self.inner = inner
        self._after = after
        self._armed = False
        self.failed = False

    def _maybe_fail(self) -> None:
        if self._armed and not self.failed:
            self.failed = True
            raise TransportError(f"{self.inner.node.name}: connection lost")

    @property
    def node(self) -> Node:
        return self.inner.node

    def run(self, argv: Sequence[str], **options: Any) -> CommandResult:
        self._maybe_fail()
        return self.inner.run(argv, **options)

    def upload(self, local: Path, remote: str, *, compare: CompareMode = "mtime") -> bool:
        self._maybe_fail()
        return self.inner.upload(local, remote, compare=compare)

    def read_from(self, path: str, offset: int, max_bytes: int = 1 << 20) -> bytes:
        self._maybe_fail()
        data = self.inner.read_from(path, offset, max_bytes)
        self._armed = self._armed or self._after in data
        return data

    def is_connected(self) -> bool:
        return True

    def close(self) -> None:
        self.inner.close()


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_a_line_written_in_two_parts_arrives_once_and_whole(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    follower = LogFollower(LocalTransport(home=tmp_path), str(log))
    append(log, b"one\ntw")
    assert follower.poll() == ["one"]
    assert follower.offset == 4  # "tw" is not handed out yet
    append(log, "o é\nthr".encode())
    assert follower.poll() == ["two é"]
    assert follower.poll() == []
    assert follower.finish() == ["thr"]  # the job ended: its last words, without a newline
    assert follower.offset == log.stat().st_size


def test_a_half_written_line_survives_a_reconnect(tmp_path: Path) -> None:
    """The flaw: the offset counted the held-back half line, so a follower started from it
    after a reconnect lost the first half and handed out the second half as a line."""
    log = tmp_path / "node.log"
    before = LogFollower(LocalTransport(home=tmp_path), str(log))
    append(log, b"first\nsecond ha")
    assert before.poll() == ["first"]
    # The connection drops; the watcher reconnects and follows on from the old offset.
    after = LogFollower(LocalTransport(home=tmp_path), str(log), before.offset)
    append(log, b"lf\nthird\n")
    assert after.poll() == ["second half", "third"]
    assert after.offset == log.stat().st_size


def test_lines_read_before_a_failed_read_are_not_lost(tmp_path: Path) -> None:
    """A poll that dies between two chunks has handed out nothing: its lines come again,
    once, from the next follower."""
    log = tmp_path / "node.log"
    lines = [f"line {i:02d}" for i in range(10)]
    append(log, "".join(f"{line}\n" for line in lines).encode())
    # Chunks of 16 bytes: "line 00\nline 01\n", "line 02\nline 03\n", then a failed read.
    cuttable = Cuttable(LocalTransport(home=tmp_path), after=b"line 03")
    before = LogFollower(cuttable, str(log))
    with pytest.raises(TransportError):
        before.poll(max_bytes=16)
    assert before.offset == 0
    after = LogFollower(LocalTransport(home=tmp_path), str(log), before.offset)
    assert after.poll(max_bytes=16) == lines


def test_the_watcher_hands_out_every_line_once_across_a_lost_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops right after a read that ended in half a line, before the
    round's read of the exit file: neither the whole lines of that read nor the half
    line may be lost, and the half line must not come out in two pieces."""
    # No process check between the Unreachable and the append, however slow this box is:
    # it would find no job process (there is none) and end the watch before the append.
    monkeypatch.setattr(watch, "PROCESS_CHECK_S", 3600.0)
    log, exit_file = tmp_path / "job.log", tmp_path / "job.pid.exit"
    append(log, b"alpha\nbra")
    first = Cuttable(LocalTransport(home=tmp_path), after=b"bra")
    events: queue.Queue[Event] = queue.Queue()
    target = WatchTarget(Node(host="localhost", local=True), str(log), str(exit_file), "m-1")
    watcher = NodeWatcher(
        target, first, events, lambda node: LocalTransport(node, home=tmp_path), poll_s=0.02
    )
    watcher.start()
    seen: list[Event] = []

    def until(kind: type) -> None:
        deadline = time.monotonic() + 10
        while not any(isinstance(e, kind) for e in seen):
            seen.append(events.get(timeout=max(0.01, deadline - time.monotonic())))

    until(Unreachable)
    assert first.failed
    append(log, b"vo\ncharlie\ndelta")  # "delta": the job's last words, no newline
    exit_file.write_text("0\n")
    until(Exited)
    watcher.join(5)
    lines = [line for e in seen if isinstance(e, LogLines) for line in e.lines]
    assert lines == ["alpha", "bravo", "charlie", "delta"]
    assert any(isinstance(e, Reachable) for e in seen)
    assert [e.exit_code for e in seen if isinstance(e, Exited)] == [0]
