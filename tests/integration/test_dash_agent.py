"""`tuneboard agent` for real: as a subprocess read by AgentStreamSource, and on real
sshd nodes over the launcher's SSH transport, shown by the dashboard (stale when the
node's sshd dies, back when it returns)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.cluster import Node
from tests.conftest import ROOT
from tests.support.pilot import sync, wait_for
from tests.support.sshd import SshdCluster, skip_reason, start_cluster
from tuneboard.dash.alerts import Thresholds, node_staleness
from tuneboard.dash.app import DashboardApp
from tuneboard.dash.base_screen import Cached
from tuneboard.dash.config import DashConfig
from tuneboard.sources.agent_stream import AgentStreamSource
from tuneboard.sources.snapshots import (
    GpuSnapshot,
    LogSnapshot,
    MetricsSnapshot,
    Snapshot,
    SourceStatus,
)
from tuneboard.sources.ssh_agent import AgentCommand, ssh_agent_sources

pytestmark = pytest.mark.integration


def _agent(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuneboard", "agent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_agent_subprocess_stream_and_reconnect(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.5}) + "\n")
    (tmp_path / "node07.log").write_text("ready\n")
    procs: list[subprocess.Popen[str]] = []

    def connect() -> Iterator[str]:
        args = ["--fake-gpus", "2", "--interval", "0.1", "--count", "2", "--node", "node07"]
        proc = _agent(*args, "--job-dir", str(tmp_path))
        procs.append(proc)
        assert proc.stdout is not None
        return iter(proc.stdout)

    source = AgentStreamSource("node07", connect, backoff_s=(0.05, 0.2))
    got: list[Snapshot] = []
    deadline = time.time() + 30
    while time.time() < deadline:
        got.extend(source.poll())
        if len(procs) >= 2 and sum(isinstance(s, GpuSnapshot) for s in got) >= 4:
            break
        time.sleep(0.05)
    source.close()
    for proc in procs:
        proc.wait(10)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    gpus = [s for s in got if isinstance(s, GpuSnapshot)]
    assert len(gpus) >= 4 and all(g.node == "node07" and len(g.gpus) == 2 for g in gpus)
    assert any(isinstance(s, MetricsSnapshot) and s.records[0].loss == 2.5 for s in got)
    assert any(isinstance(s, LogSnapshot) and s.lines == ("ready",) for s in got)
    ended = [s for s in got if isinstance(s, SourceStatus) and not s.connected]
    assert ended and ended[0].message == "agent stream ended"  # then it reconnected


def test_agent_exits_quietly_when_its_reader_goes_away() -> None:
    proc = _agent("--fake-gpus", "1", "--interval", "0.05")
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["v"] == 1
    proc.stdout.close()  # the SSH session closed
    assert proc.wait(10) == 0
    assert "Traceback" not in proc.stderr.read()


def _agent_pids(node_name: str) -> list[int]:
    """Processes running `PYTHON -m tuneboard agent ... --node node_name` (not the shell
    that started it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[1:4] == [b"-m", b"tuneboard", b"agent"] and node_name.encode() in argv:
            found.append(int(entry.name))
    return found


@sync
async def test_agents_over_ssh_go_stale_and_recover(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = start_cluster(tmp_path / "sshd", 2)  # its own nodes: one gets killed
    try:
        tag = uuid.uuid4().hex[:6]
        nodes = [
            Node(host=n.address, port=n.port, user=cluster.user, label=f"n{n.index}-{tag}")
            for n in cluster.nodes
        ]
        names = [node.name for node in nodes]
        job = tmp_path / "job"
        job.mkdir()
        (job / "metrics.jsonl").write_text(json.dumps({"step": 3, "loss": 1.25}) + "\n")
        command = AgentCommand(python=sys.executable, interval_s=0.2, job_dir=str(job), fake_gpus=2)
        options = cluster.connect_options(connect_timeout_s=3.0)
        sources = ssh_agent_sources(nodes, options, command, backoff_s=(0.2, 1.0))
        config = DashConfig(
            sources=sources, interval_s=0.2, thresholds=Thresholds(stale_min_s=3.0), label="ssh"
        )
        app = DashboardApp(config)

        def health(name: str) -> str:
            node = app.state.nodes.get(name)
            return (
                "absent" if node is None else node_staleness(node, time.time(), config.thresholds)
            )

        def summary() -> str:
            return str(app.screen.query_one("#cluster-summary", Cached).render())

        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(
                pilot,
                lambda: all(health(n) == "ok" for n in names) and app.state.gpu_count() == 4,
                timeout=30,
            )
            assert app.state.job.last is not None and app.state.job.last.loss == 1.25
            assert len(_agent_pids(names[1])) == 1  # the agent runs under node 1's sshd

            killed = cluster.kill_node(1)
            await wait_for(pilot, lambda: health(names[1]) != "ok", timeout=15)
            assert health(names[0]) == "ok"  # the other node goes on
            assert not _agent_pids(names[1]) and killed
            await pilot.pause(1.5)  # reconnects are refused meanwhile (backoff 0.2 s..1 s)
            assert health(names[1]) != "ok"
            await wait_for(pilot, lambda: " lost" in summary() or " stale" in summary())
            gone = app.state.nodes[names[1]].last_seen_s
            assert gone is not None

            cluster.restart_node(1)
            back = time.time()

            def fresh() -> bool:  # samples from the node since its sshd came back
                seen = app.state.nodes[names[1]].last_seen_s
                return health(names[1]) == "ok" and seen is not None and seen > back

            await wait_for(pilot, fresh, timeout=30)
            node = app.state.nodes[names[1]]
            assert len(node.gpus) == 2 and sources[1].connects >= 2
            await wait_for(pilot, lambda: " lost" not in summary() and " stale" not in summary())
            assert len(_agent_pids(names[1])) == 1
        # the dashboard closed its sources: the connections closed, the agents exited
        deadline = time.time() + 10
        while any(_agent_pids(n) for n in names):
            assert time.time() < deadline, f"agents left running: {_agent_pids(names[0])}"
            time.sleep(0.1)
    finally:
        cluster.stop()


def test_a_node_without_the_agent_says_why(tmp_path: Path, sshd_cluster: SshdCluster) -> None:
    node = sshd_cluster.nodes[0]
    target = Node(host=node.address, port=node.port, user=sshd_cluster.user, label="bare")
    command = AgentCommand(python="/nonexistent/python3", interval_s=0.2)
    options = sshd_cluster.connect_options(connect_timeout_s=3.0)
    (source,) = ssh_agent_sources([target], options, command)
    got: list[Snapshot] = []
    deadline = time.time() + 15
    while not any(isinstance(s, SourceStatus) and not s.connected for s in got):
        assert time.time() < deadline, got
        got.extend(source.poll())
        time.sleep(0.05)
    source.close()
    down = next(s for s in got if isinstance(s, SourceStatus) and not s.connected)
    assert down.node == "bare" and down.message is not None
    assert "agent exited with status 127" in down.message
    assert "/nonexistent/python3" in down.message
