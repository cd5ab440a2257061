"""Codec, the poller, record -> replay, the agent's lines and the agent-stream source."""

from __future__ import annotations

import io
import itertools
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tuneboard.agent import AgentOptions, run_agent
from tuneboard.sources.agent_stream import AgentStreamSource, agent_line, parse_agent_line
from tuneboard.sources.base import Poller, SourceError
from tuneboard.sources.codec import CodecError, decode, encode
from tuneboard.sources.fake_nvml import fake_node
from tuneboard.sources.nvml_sampler import NvmlSampler
from tuneboard.sources.record import Recorder
from tuneboard.sources.replay import ReplayError, ReplaySource, check_recording, read_records
from tuneboard.sources.snapshots import (
    GpuSnapshot,
    HostSnapshot,
    JobInfo,
    LogSnapshot,
    MetricsSnapshot,
    Snapshot,
    SourceStatus,
    StatusSnapshot,
    StepMetrics,
)

REPLAY = ROOT / "tests" / "data" / "replay-3x8-a800.jsonl"


def _examples() -> list[Snapshot]:
    return [
        NvmlSampler(fake_node(2), "n0").sample(),
        HostSnapshot("n0", 1.0, 12.5, 64, 100, 200, 3.0),
        MetricsSnapshot(
            2.0, (StepMetrics(3, 10, 0.3, 1.5, 0.9, 1e-5, 3000, 1e4, 30, 70, 1 << 30),)
        ),
        StatusSnapshot(3.0, "failed", "CUDA out of memory"),
        LogSnapshot("n0", 4.0, ("a", "b █")),
        JobInfo(5.0, "job", "llama-2-7b", 7_000_000_000, 4.2e10, 16),
        SourceStatus("agent:n0", "n0", 6.0, False, "stream ended"),
    ]


def test_every_snapshot_kind_round_trips_through_json() -> None:
    for snap in _examples():
        assert decode(json.loads(json.dumps(encode(snap)))) == snap


def test_nan_loss_survives_the_round_trip() -> None:
    snap = MetricsSnapshot(1.0, (StepMetrics(1, loss=float("nan")),))
    back = decode(json.loads(json.dumps(encode(snap))))
    assert isinstance(back, MetricsSnapshot)
    loss = back.records[0].loss
    assert loss is not None and math.isnan(loss)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"kind": "weather"}, "unknown snapshot kind 'weather'"),
        ({"kind": "gpus", "node": "n", "time_s": 1, "gpus": "x"}, "gpus: expected a list"),
        ({"kind": "host", "node": "n", "time_s": "soon"}, "HostSnapshot.time_s"),
        ({"kind": "metrics", "time_s": 1, "records": [{"loss": 1}]}, "no 'step'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_snapshots_are_named(obj: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(obj)


class SlowSource:
    """Counts how many polls run at once; each poll takes `took_s`."""

    def __init__(self, took_s: float, interval_s: float, fail_first: int = 0) -> None:
        self.took_s, self._interval_s, self.fail_first = took_s, interval_s, fail_first
        self.active = self.max_active = self.calls = 0
        self.lock = threading.Lock()

    name = "slow"

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def poll(self) -> Sequence[Snapshot]:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
            calls = self.calls
        time.sleep(self.took_s)
        with self.lock:
            self.active -= 1
        if calls <= self.fail_first:
            raise SourceError("not reachable")
        return (LogSnapshot("n", time.time(), (f"poll {calls}",)),)

    def close(self) -> None:
        pass


def test_a_slow_poll_delays_the_next_and_never_overlaps() -> None:
    source = SlowSource(took_s=0.05, interval_s=0.01)
    got: list[tuple[str, int]] = []
    poller = Poller(source, lambda name, items, took: got.append((name, len(items)))).start()
    time.sleep(0.4)
    poller.stop()
    assert source.max_active == 1
    assert 4 <= source.calls <= 9  # back to back: ~0.05 s each, never faster
    assert got and all(name == "slow" for name, _ in got)
    assert not poller.running


def test_failing_poll_is_reported_and_polling_goes_on() -> None:
    source = SlowSource(took_s=0.0, interval_s=0.01, fail_first=1)
    got: list[Snapshot] = []
    poller = Poller(source, lambda n, items, t: got.extend(items), max_backoff_s=0.05).start()
    time.sleep(0.3)
    poller.stop()
    status = got[0]
    assert isinstance(status, SourceStatus) and status.connected is False
    assert status.message == "not reachable"
    assert any(isinstance(s, LogSnapshot) for s in got[1:])


def test_record_then_replay_gives_the_same_snapshots_at_speed(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(path)
    examples = _examples()
    for i, snap in enumerate(examples):
        recorder.write("src", [snap], t=1000.0 + i)
    recorder.close()
    check_recording(path)
    assert [s for _, s in read_records(path)] == examples

    now = [0.0]
    replay = ReplaySource(path, speed=2.0, monotonic=lambda: now[0])
    assert replay.poll() == [examples[0]]  # t = 1000
    now[0] = 1.0  # = 2 recorded seconds
    assert replay.poll() == examples[1:3]
    assert replay.virtual_time() == 1002.0
    now[0] = 10.0
    rest = replay.poll()
    assert rest[:-1] == examples[3:]
    assert isinstance(rest[-1], SourceStatus) and rest[-1].message == "replay finished"
    assert replay.finished and replay.virtual_time() == 1006.0  # frozen at the end
    assert replay.poll() == ()


def test_bad_recordings_are_refused_with_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tuneboard_record": 1}\n{"t": 1, "snapshot": {"kind": "nope"}}\n')
    with pytest.raises(ReplayError, match=r"bad.jsonl:2: unknown snapshot kind"):
        check_recording(bad)
    with pytest.raises(ReplayError, match="no such file"):
        check_recording(tmp_path / "missing.jsonl")
    with pytest.raises(ReplayError, match="--speed must be positive"):
        ReplaySource(bad, speed=0)


def test_the_shipped_replay_is_what_its_script_makes() -> None:
    import subprocess
    import sys

    assert REPLAY.stat().st_size < 2_000_000
    proc = subprocess.run(
        [sys.executable, "tests/data/make_replay.py", "--check"], cwd=ROOT, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr


def test_the_shipped_replay_tells_its_story() -> None:
    records = [s for _, s in read_records(REPLAY)]
    gpus = [s for s in records if isinstance(s, GpuSnapshot)]
    assert {g.node for g in gpus} == {"node00", "node01", "node02"}
    assert all(len(g.gpus) == 8 and g.gpus[0].name == "NVIDIA A800-SXM4-80GB" for g in gpus)
    steps = [r for s in records if isinstance(s, MetricsSnapshot) for r in s.records]
    losses = [r.loss for r in steps if r.loss is not None]
    assert len(steps) == 160 and sum(losses[:10]) / 10 > sum(losses[-10:]) / 10 + 0.5
    assert any(b < a for a, b in itertools.pairwise(losses))  # noisy, not monotone
    lrs = [r.learning_rate or 0.0 for r in steps]
    assert lrs.index(max(lrs)) == 9 and lrs[-1] < lrs[9] / 5  # warmup, then decay
    node2 = sorted(g.time_s for g in gpus if g.node == "node02")
    assert max(b - a for a, b in itertools.pairwise(node2)) > 10  # the lagging node
    phases = [s.phase for s in records if isinstance(s, StatusSnapshot)]
    assert phases == ["loading", "training", "saving", "done"]
    assert any(isinstance(s, LogSnapshot) and "NCCL WARN" in s.lines[0] for s in records)


def test_agent_prints_one_parseable_line_per_sample(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    out = io.StringIO()
    options = AgentOptions(interval_s=0.01, node="gpu-7", metrics=metrics, count=3)
    assert run_agent(options, out, api=fake_node(8)) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    parsed = [parse_agent_line(line) for line in lines]
    for items in parsed:
        gpu = next(i for i in items if isinstance(i, GpuSnapshot))
        assert gpu.node == "gpu-7" and len(gpu.gpus) == 8
        assert any(isinstance(i, HostSnapshot) for i in items)
    steps = [
        r.step
        for items in parsed
        for i in items
        if isinstance(i, MetricsSnapshot)
        for r in i.records
    ]
    assert steps == [1]  # each line once; the half-written one waits


def test_agent_stream_source_reconnects_after_the_stream_ends() -> None:
    line = agent_line("n1", 5.0, [HostSnapshot("n1", 5.0, 1.0, 8, 1, 2)])
    attempts = [0]

    def connect() -> Iterator[str]:
        attempts[0] += 1
        if attempts[0] == 1:
            raise OSError("connection refused")
        return iter(["login banner, not JSON", line])

    source = AgentStreamSource("n1", connect, backoff_s=(0.01, 0.05))
    got: list[Snapshot] = []
    deadline = time.time() + 3
    while time.time() < deadline and sum(isinstance(s, HostSnapshot) for s in got) < 2:
        got.extend(source.poll())
        time.sleep(0.01)
    source.close()
    statuses = [s for s in got if isinstance(s, SourceStatus)]
    assert statuses[0].connected is False and "connection refused" in (statuses[0].message or "")
    assert any(s.connected for s in statuses)
    assert any(not s.connected and s.message == "agent stream ended" for s in statuses[1:])
    assert sum(isinstance(s, HostSnapshot) for s in got) >= 2 and source.bad_lines >= 2
    assert all(s.node == "n1" for s in statuses)
