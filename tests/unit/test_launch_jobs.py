"""Job directories and the jobs / status / logs commands on them; bad launch input; the
node probe run on this machine."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import LauncherInputError
from launcher.job.store import (
    JobDir,
    RootCause,
    find_job,
    list_job_dirs,
    new_job_id,
    process_start,
    supervisor_alive,
)
from launcher.preflight import checks
from launcher.preflight.checks import node_probe
from launcher.preflight.rendezvous import Arrivals, listen_outcome
from tests.conftest import ROOT
from tests.support.cli_runner import invoke
from tests.support.jobs import add_job, make_state


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "160")
    return tmp_path / "tuneboard"


def test_state_round_trips_and_ids_are_found_by_prefix(state_home: Path) -> None:
    assert re.fullmatch(r"my-run-\d{4}-\d{6}-[0-9a-f]{4}", new_job_id("my run!"))
    first = add_job(state_home, "tiny-0101-000000-aaaa", 1.0)
    failed = make_state(
        "tiny-0101-000001-bbbb",
        2.0,
        status="failed",
        root_cause=RootCause("node1", 1, 3, 1, "exit code 1", ("Traceback", "boom")),
    )
    second = JobDir.create(failed.id, state_home)
    second.write_state(failed)
    assert second.read_state() == failed
    assert first.path.stat().st_mode & 0o777 == 0o700
    assert [j.id for j in list_job_dirs(state_home)] == [first.id, second.id]
    assert find_job("latest", state_home).id == second.id
    assert find_job("tiny-0101-000000", state_home).id == first.id
    with pytest.raises(LauncherInputError, match="matches 2 jobs"):
        find_job("tiny-0101", state_home)
    with pytest.raises(LauncherInputError, match="no job 'nope'"):
        find_job("nope", state_home)
    with pytest.raises(LauncherInputError, match="not a job id"):
        find_job("../etc", state_home)


def test_a_supervisor_is_alive_only_with_the_same_pid_and_start_time() -> None:
    me = make_state(
        "x",
        0.0,
        status="running",
        supervisor_pid=os.getpid(),
        supervisor_start=process_start(os.getpid()),
        supervisor_host=socket.gethostname(),
    )
    assert supervisor_alive(me)
    assert not supervisor_alive(dataclasses.replace(me, supervisor_start=1))  # a recycled pid
    assert not supervisor_alive(dataclasses.replace(me, supervisor_host="elsewhere"))


def test_jobs_status_and_logs_commands(state_home: Path) -> None:
    job = add_job(state_home, "tiny-0101-000000-aaaa", 1.0)
    lost = add_job(state_home, "tiny-0101-000001-bbbb", 2.0, status="running", supervisor_pid=1)
    job.combined_log.write_text("node0/0 hello\nnode1/2 world\n")
    job.node_log("node1").write_text("node1/2 world\n")

    listed = invoke(["jobs", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["status"], r["status_shown"]) for r in rows] == [
        (job.id, "succeeded", "succeeded"),
        (lost.id, "running", "lost"),  # its supervisor is gone: it may still run on the nodes
    ]
    assert rows[0]["progress"]["step"] == 40 and rows[0]["world_size"] == 4
    table = invoke(["jobs"]).stdout
    assert job.id in table and "40/40" in table and "lost" in table

    status = invoke(["status", "tiny-0101-000000", "--json"])
    data = json.loads(status.stdout)
    assert data["id"] == job.id and data["job_dir"] == str(job.path)
    assert data["secret_names"] == ["HF_TOKEN"] and data["supervisor_alive"] is False
    shown = invoke(["status", lost.id]).stdout
    assert "lost" in shown and f"tuneboard stop {lost.id}" in shown

    assert invoke(["logs", job.id]).stdout == "node0/0 hello\nnode1/2 world\n"
    assert invoke(["logs", job.id, "--node", "node1"]).stdout == "node1/2 world\n"
    bad = invoke(["logs", job.id, "--node", "node9"])
    assert bad.exit_code == 2 and "runs on node0, node1" in bad.stderr
    missing = invoke(["status", "nope"])
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1
    refused = invoke(["resume", lost.id])
    assert refused.exit_code == 2 and "stop it first" in refused.stderr


def test_stop_of_an_ended_job_says_so(state_home: Path) -> None:
    job = add_job(state_home, "tiny-0101-000000-aaaa", 1.0)
    result = invoke(["stop", job.id])
    assert result.exit_code == 0 and "had already ended: succeeded" in result.stdout


@pytest.mark.parametrize(
    ("write", "args", "message"),
    [
        (None, [], "no such file"),
        ("model: {name: x}\ntraining: {learnig_rate: 1}\n", [], "learning_rate"),
        ("model: {name: x}\n", ["--hostfile", "HOSTS"], "slots must be a whole number"),
        ("model: {name: x}\n", ["--nproc-per-node", "0"], "--nproc-per-node must be ≥ 1"),
        ("model: {name: x}\ncluster: {nodes: [a], workdir: '/w/{x}'}\n", [], "placeholder {x}"),
        ("model: {name: x}\n", [], "data.train is not set, so there is nothing to train on"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_starts_nothing(
    write: str | None, args: list[str], message: str, tmp_path: Path
) -> None:
    recipe = tmp_path / "r.yaml"
    if write is not None:
        recipe.write_text(write)
    (tmp_path / "hosts").write_text("node1 slots=x\n")
    args = [str(tmp_path / "hosts") if a == "HOSTS" else a for a in args]
    r = subprocess.run(
        [sys.executable, "-m", "tuneboard", "launch", str(recipe), "--cpu", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "state").exists()


# -- the node probe, run here ---------------------------------------------------------------


def test_probe_facts_of_this_machine(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("{}\n")
    (tmp_path / "out" / "checkpoint-20").mkdir(parents=True)
    (tmp_path / "out" / "checkpoint-20" / "trainer_state.json").write_text("{}")
    (tmp_path / "out" / "checkpoint-30").mkdir()  # no trainer_state.json: not complete
    facts = node_probe.facts(
        {
            "workdir": str(tmp_path),
            "packages": ["pydantic", "no-such-dist"],
            "modules": ["launcher.preflight.node_probe", "no_such_module"],
            "paths": ["data.jsonl", "missing.jsonl"],
            "output_dir": "out",
            "master_addr": "127.0.0.1",
            "master_port": 1,
            "is_master": True,
            "connect_timeout_s": 0.2,
        }
    )
    assert facts["python"] == sys.executable
    assert facts["packages"]["pydantic"] and facts["packages"]["no-such-dist"] is None
    assert facts["modules"] == {"launcher.preflight.node_probe": True, "no_such_module": False}
    assert facts["paths"] == {"data.jsonl": True, "missing.jsonl": False}
    assert facts["latest_checkpoint"] == 20
    assert facts["iface"] == "lo" and facts["disk_free_bytes"] > 0
    assert facts["connect"]["ok"] is False  # nothing listens on port 1


def test_packages_not_installed_says_how_to_fix_it(tmp_path: Path) -> None:
    """Which python was probed, what to install there, or which python to name instead."""
    args = {
        "workdir": str(tmp_path),
        "packages": ["pydantic", "no-such-dist"],
        "modules": [],
        "paths": [],
        "output_dir": None,
        "master_addr": "127.0.0.1",
        "master_port": 1,
        "is_master": False,
        "connect_timeout_s": 0.2,
    }
    facts = checks._FACTS.validate_python(node_probe.facts(args))
    check = checks._packages_check(facts, checks.Needs(packages=("no-such-dist",), modules=()))
    assert check.status == "fail"
    assert check.detail == (
        f"not installed: no-such-dist (for {sys.executable}: install torch for the node's CUDA, "
        f"then `{sys.executable} -m pip install 'tuneboard[train]'` there, or name the python "
        "that has them with cluster.python / cluster.venv)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def master_probe(tmp_path: Path, addr: str, port: int, count: int) -> subprocess.Popen[str]:
    """The master's probe as preflight runs it: `python -c SOURCE facts JSON` with "listen"."""
    args = {
        "workdir": str(tmp_path),
        "packages": [],
        "modules": [],
        "paths": [],
        "output_dir": None,
        "master_addr": addr,
        "master_port": port,
        "is_master": True,
        "connect_timeout_s": 0.5,
        "listen": {"count": count, "timeout_s": 20},
    }
    source = Path(node_probe.__file__).read_text(encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-c", source, "facts", json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


def probe_answer(probe: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = probe.communicate(timeout=30)
    assert probe.returncode == 0
    answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return answer


def test_master_probe_listens_for_every_node_or_a_done(tmp_path: Path) -> None:
    port = free_port()
    every = master_probe(tmp_path, "127.0.0.1", port, count=3)  # itself and two nodes
    assert every.stdout is not None and every.stdout.readline().strip() == "listening"
    for _ in range(2):
        assert node_probe.connect("127.0.0.1", port, 2)["ok"] is True
    facts = probe_answer(every)
    assert facts["listen"] == {"ok": True, "accepted": 3}
    assert facts["connect"]["ok"] is True

    port = free_port()
    started = time.monotonic()
    early = master_probe(tmp_path, "127.0.0.1", port, count=3)
    assert early.stdout is not None and early.stdout.readline().strip() == "listening"
    assert node_probe.connect("127.0.0.1", port, 2)["ok"] is True
    assert node_probe.connect("127.0.0.1", port, 2, node_probe.DONE)["ok"] is True
    assert probe_answer(early)["listen"] == {"ok": True, "accepted": 2}
    assert time.monotonic() - started < 10  # not the listener's 20 s timeout


def test_master_probe_says_why_it_cannot_bind(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        listen = probe_answer(master_probe(tmp_path, "127.0.0.1", taken, count=1))["listen"]
        assert listen["errno"] == 98
    elsewhere = probe_answer(master_probe(tmp_path, "10.254.254.254", free_port(), count=1))
    assert elsewhere["listen"]["errno"] == 99


def test_the_last_node_stops_the_listener_or_gives_up_waiting_for_it() -> None:
    sent: list[str] = []
    arrivals = Arrivals(lambda: sent.append("done"), expected=2, wait_s=5)
    arrivals.said("listening")
    arrivals.arrived(came=True)
    arrivals.arrived(came=False)
    assert sent == ["done"] and arrivals.stalled_s is None

    ended = Arrivals(lambda: sent.append("late"), expected=1, wait_s=5)
    ended.master_ended()
    ended.arrived(came=False)
    assert sent == ["done"]  # nothing listens any more: nothing to stop

    silent = Arrivals(lambda: sent.append("silent"), expected=1, wait_s=0.2)
    started = time.monotonic()
    silent.arrived(came=False)  # the master's probe never says a word: no hang
    assert 0.2 <= time.monotonic() - started < 5
    assert sent == ["done"] and silent.stalled_s == 0.2
    verdict = listen_outcome(TimeoutError("60 s"), None, "10.0.0.1", 29500, silent.stalled_s)
    assert not verdict.ok and verdict.short == "silent"
    assert "neither listened on 10.0.0.1:29500 nor ended within 0.2 s" in verdict.detail


def test_launcher_and_its_commands_import_without_the_training_stack() -> None:
    code = (
        "import sys, tuneboard.cli, tuneboard.cli_launch, tuneboard.cli_jobs\n"
        "commands = set(sys.modules)\n"
        "import pkgutil, importlib, launcher\n"
        "for m in pkgutil.walk_packages(launcher.__path__, 'launcher.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(' '.join(sorted(commands)), '|', ' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    commands, everything = (part.split() for part in out.split("|"))
    assert "launcher.job.supervisor" in commands and "paramiko" not in commands  # SSH when used
    heavy = [m for m in ("torch", "transformers", "textual", "peft", "trl") if m in everything]
    assert heavy == []
