"""`tuneboard agent` for real, as a subprocess, read by AgentStreamSource.

The SSH leg (the launcher's transport running the same command on a node) is not wired
yet; this is everything else of that path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tuneboard.sources.agent_stream import AgentStreamSource
from tuneboard.sources.snapshots import (
    GpuSnapshot,
    LogSnapshot,
    MetricsSnapshot,
    Snapshot,
    SourceStatus,
)

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
