"""`tuneboard launch` end to end: real OpenSSH nodes on loopback, real torchrun over gloo.

The nodes are sshd processes on this machine (127.0.0.2, .3, ...), so what a node runs is
visible in /proc here: every check of "no process left" looks for the job's marker in
every process's environment, exactly as the launcher's own stop does.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from launcher.job.launch import (
    LaunchRequest,
    check,
    connect,
    create_job,
    needs_for,
    plan_job,
    prepare,
    run_foreground,
    sync_files,
)
from launcher.job.store import list_job_dirs
from launcher.preflight.checks import LISTEN_TIMEOUT_S, run_preflight
from launcher.transport.base import CommandResult, Transport
from tests.integration.launch_helpers import (
    DIST_PROGRAM,
    SECRET,
    Recorder,
    free_port,
    job_pids,
    known_hosts,
    leaked,
    only_job,
    options,
    project,
    rank_pid,
    state_home,
    tb,
    tiny_recipe,
    tuneboard_home,
    wait_for,
)
from tests.support.sshd import SshdCluster

pytestmark = pytest.mark.integration
__all__ = ["project", "state_home"]  # fixtures, used by name


# -- preflight and dry run ----------------------------------------------------------------------


def test_dry_run_prints_each_nodes_exact_command(
    sshd_cluster: SshdCluster, state_home: Path, project: Path, tmp_path: Path
) -> None:
    nodes = tmp_path / "nodes"
    port = free_port()
    recipe = tiny_recipe(
        sshd_cluster,
        project,
        workdir=f"{nodes}/{{node_rank}}",
        master_port=port,
        env={"NCCL_DEBUG": "WARN", "MY_API_TOKEN": "recipe-token-value"},
    )
    r = tb(
        "launch",
        str(recipe),
        "--cpu",
        "--dry-run",
        *known_hosts(sshd_cluster),
        state=state_home,
        cwd=project,
        env={"HF_TOKEN": SECRET},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "preflight passed" in r.stdout
    commands = [shlex.split(line) for line in r.stdout.splitlines() if line.startswith("cd ")]
    assert len(commands) == 2
    for rank, words in enumerate(commands):
        assert words[:4] == ["cd", f"{nodes}/{rank}", "&&", "env"]
        run = words[words.index(sys.executable) :]
        assert run[1:3] == ["-m", "torch.distributed.run"]
        flags = dict(zip(run[3:17:2], run[4:18:2], strict=True))
        assert flags == {
            "--nnodes": "2",
            "--nproc-per-node": "2",
            "--node-rank": str(rank),
            "--master-addr": "127.0.0.2",
            "--master-port": str(port),
            "--max-restarts": "0",
            "--rdzv-id": "dry-run",
        }
        assert run[-3:-1] == ["-m", "recipes.run"] and run[-1].endswith("/tiny.yaml")
        env = words[4 : words.index(sys.executable)]
        assert "GLOO_SOCKET_IFNAME=lo" in env  # the interface that reaches 127.0.0.2
        assert "NCCL_DEBUG=WARN" in env
        assert "HF_TOKEN=$HF_TOKEN" in env  # by name: the value stays in your environment
        assert "MY_API_TOKEN=$MY_API_TOKEN" in env
    assert SECRET not in r.stdout + r.stderr
    assert "recipe-token-value" not in r.stdout
    assert not nodes.exists()  # nothing was copied, nothing started
    assert list_job_dirs(tuneboard_home(state_home)) == []


@pytest.mark.parametrize(
    "fault", ["missing python", "wrong master address", "port in use", "bad data on the nodes"]
)
def test_preflight_refuses_and_starts_nothing(
    fault: str, sshd_cluster: SshdCluster, state_home: Path, project: Path, tmp_path: Path
) -> None:
    port = free_port()
    python = "/nonexistent/venv/bin/python" if fault == "missing python" else sys.executable
    recipe = tiny_recipe(
        sshd_cluster, project, workdir=str(tmp_path / "w"), master_port=port, python=python
    )
    extra = ["--master-addr", "10.254.254.254"] if fault == "wrong master address" else []
    if fault == "bad data on the nodes":  # an absolute path: not copied, read on the nodes
        bad = tmp_path / "on-nodes" / "train.jsonl"
        bad.parent.mkdir()
        bad.write_text('{"prompt": "1+1=", "completion": ""}\n')
        extra = [f"data.train={bad}"]
    squatter = socket.socket()
    if fault == "port in use":
        squatter.bind(("127.0.0.2", port))
        squatter.listen()
    try:
        started = time.monotonic()
        r = tb(
            "launch",
            str(recipe),
            "--cpu",
            *extra,
            *known_hosts(sshd_cluster),
            state=state_home,
            cwd=project,
        )
        took = time.monotonic() - started
    finally:
        squatter.close()
    assert r.returncode == 3, r.stdout + r.stderr
    assert "preflight failed" in r.stdout
    failures = [line for line in r.stdout.splitlines() if line.startswith("✗ ")]
    if fault == "missing python":
        assert failures == [
            "✗ node0 python: python not found: /nonexistent/venv/bin/python",
            "✗ node1 python: python not found: /nonexistent/venv/bin/python",
        ]
    elif fault == "wrong master address":
        assert failures[0] == (
            "✗ node0 port: 10.254.254.254:"
            f"{port}: 10.254.254.254 is not an address of the master node"
        )
        assert {f.split(":")[0] for f in failures[1:]} == {"✗ node0 master", "✗ node1 master"}
    elif fault == "bad data on the nodes":  # checked on the master, before anything starts
        assert failures == [
            f"✗ node0 data: data.train: {bad} row 1: column 'completion' must be a non-empty "
            "string (or a list of messages), got '' (checked on node0)"
        ]
    else:
        assert failures[0] == f"✗ node0 port: 127.0.0.2:{port} is in use (another job or service?)"
    assert took < 15
    assert list_job_dirs(tuneboard_home(state_home)) == []
    assert not (tmp_path / "w").exists()


class MissingPython:
    """node1 as it is, except that the recipe's python is not installed there."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner

    def run(self, argv: Sequence[str], **options: Any) -> CommandResult:
        if argv and argv[0] == sys.executable:
            argv = ["/nonexistent/venv/bin/python", *argv[1:]]
        return self._inner.run(argv, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_node_that_never_connects_does_not_hold_the_master_listening(
    sshd_cluster: SshdCluster, project: Path, tmp_path: Path
) -> None:
    """The master's probe listens for every node's connection. node1's probe fails (no
    python there): the listener is told at once to stop waiting, not at its timeout, and
    the master's own checks pass."""
    recipe = tiny_recipe(sshd_cluster, project, workdir=str(tmp_path / "w"))
    prepared = prepare(
        LaunchRequest(recipe_path=recipe, cpu=True, cwd=project, connect=options(sshd_cluster))
    )
    needs = needs_for(prepared.recipe, prepared.files, resume=False)
    with connect(prepared) as pool:
        pool.transports["node1"] = MissingPython(pool.transports["node1"])
        report = run_preflight(pool, prepared.target, needs)
    assert [(node, c.name, c.detail) for node, c in report.failures] == [
        ("node1", "python", f"python not found: {sys.executable}")
    ]
    master = {c.name: c.status for c in report.nodes[0].checks}
    assert [master[c] for c in ("python", "port", "master")] == ["ok"] * 3
    assert report.duration_s < LISTEN_TIMEOUT_S / 3, report.duration_s


# -- a job end to end ---------------------------------------------------------------------------


def test_tiny_recipe_on_separate_workdirs(
    sshd_cluster: SshdCluster, state_home: Path, tmp_path: Path
) -> None:
    """No shared filesystem: each node gets its own copy of the recipe and data, and each
    node's local rank 0 builds its own tiny base model (recipes/train/tiny_model.py)."""
    project = tmp_path / "project"
    project.mkdir()
    recipe = tiny_recipe(
        sshd_cluster,
        project,
        workdir=f"{tmp_path}/nodes/{{node_rank}}",
        training={"max_steps": 4, "save_steps": 100, "logging_steps": 2},
    )
    r = tb(
        "launch", str(recipe), "--cpu", *known_hosts(sshd_cluster), state=state_home, cwd=project
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    state = only_job(state_home).read_state()
    assert state.status == "succeeded"
    assert [(n.name, n.exit_code) for n in state.nodes] == [("node0", 0), ("node1", 0)]
    for rank in (0, 1):
        assert (tmp_path / "nodes" / str(rank)).is_dir()
    assert job_pids(state.marker) == []


def test_two_nodes_train_the_tiny_lora_recipe(
    sshd_cluster: SshdCluster, state_home: Path, tmp_path: Path
) -> None:
    """2 nodes x 2 ranks on one shared workdir (as on NFS), the real recipe to the end."""
    shared = tmp_path / "shared"
    shared.mkdir()
    recipe = tiny_recipe(
        sshd_cluster,
        shared,
        workdir=str(shared),
        shared_fs=True,
        training={"max_steps": 10, "save_steps": 5, "logging_steps": 5},
    )
    started = time.monotonic()
    r = tb(
        "launch",
        str(recipe),
        "--cpu",
        *known_hosts(sshd_cluster),
        state=state_home,
        cwd=shared,
        env={"HF_TOKEN": SECRET},
    )
    took = time.monotonic() - started
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    job = only_job(state_home)
    state = job.read_state()
    assert state.status == "succeeded"
    assert [(n.name, n.exit_code) for n in state.nodes] == [("node0", 0), ("node1", 0)]
    assert state.progress is not None and state.progress.step == 10
    # plan vs actual: every rank's peaks (RSS on CPU) beside the plan made at launch
    memory = state.progress.memory
    assert [m.rank for m in memory] == [0, 1, 2, 3]
    assert all(m.device == "cpu" and (m.rss_peak_bytes or 0) > 100 * 2**20 for m in memory)
    assert state.planned is not None and state.planned.tensor_bytes > 0
    assert state.planned.gpu_name is None  # a CPU run: tensors planned alone
    shown = tb("status", job.id, state=state_home, cwd=shared)
    assert "memory planned for lora" in shown.stdout and "(RSS)" in shown.stdout, shown.stdout
    log = job.combined_log.read_text()
    for node, rank in (("node0", 0), ("node0", 1), ("node1", 2), ("node1", 3)):
        assert f"\n{node}/{rank} " in log, f"no line from {node}/{rank}"
        assert f"{node}/{rank} " in job.node_log(node).read_text()
    metrics = [json.loads(line) for line in job.metrics.read_text().splitlines()]
    assert [m["step"] for m in metrics if m["event"] == "train"] == [1, 5, 10]
    assert metrics[-1]["loss"] < metrics[0]["loss"] * 1.5
    assert "progress: step 10/10 (100%)" in r.stdout
    assert job_pids(state.marker) == []
    assert leaked(SECRET, job.path, shared) == ""
    print(f"launch -> succeeded: {took:.1f} s")

    # `tuneboard resume`: the same nodes, training.resume=auto, every node at checkpoint-10.
    dry = tb("resume", state.id, "--dry-run", state=state_home, cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "training.resume=auto" in dry.stdout
    assert "resume     ✓ step 10" in dry.stdout


# -- failure anywhere stops everything ----------------------------------------------------------


@pytest.mark.parametrize("how", ["raises", "killed"])
def test_a_failed_rank_stops_every_node(
    how: str, sshd_cluster: SshdCluster, state_home: Path, project: Path, tmp_path: Path
) -> None:
    """Rank 3 raises (or rank 2 is SIGKILLed); the other ranks would run forever, as ranks
    waiting on a dead peer hang: the launcher must stop them and name the culprit."""
    pwned = tmp_path / "pwned"
    env = {"TB_TEST_NOTE": f"out; touch {pwned}", "TB_TEST_STEPS": "0"}
    if how == "raises":
        env["TB_TEST_FAIL_RANK"] = "3"
    recipe = tiny_recipe(sshd_cluster, project, workdir=f"{tmp_path}/nodes/{{node_rank}}", env=env)
    request = LaunchRequest(
        recipe_path=recipe,
        cpu=True,
        cwd=project,
        program=(str(DIST_PROGRAM),),
        connect=options(sshd_cluster),
        state_root=tuneboard_home(state_home),
        grace_s=3.0,
    )
    prepared = prepare(request)
    with connect(prepared) as pool:
        checked = check(prepared, pool)
        assert checked.report.ok, checked.report.failures
        plan = plan_job(prepared, checked)
        job, state = create_job(prepared, plan)
        synced = sync_files(prepared, plan, pool, job)
        assert [r.value.copied for r in synced if r.value] == [2, 2]  # data + recipe, each
        for rank in (0, 1):
            data = tmp_path / "nodes" / str(rank) / "data" / "tiny" / "prompt_completion.jsonl"
            assert data.read_bytes() == (project / "data/tiny/prompt_completion.jsonl").read_bytes()
        recorder = Recorder()
        killer = threading.Thread(target=_kill_rank_2, args=(plan.marker, recorder), daemon=True)
        if how == "killed":
            killer.start()
        final = run_foreground(prepared, plan, pool, job, state, recorder)
        ended = time.monotonic()
    cause = final.root_cause
    assert final.status == "failed" and cause is not None
    if how == "raises":
        failed_at = next(t for t, _, rank, text in recorder.lines if "injected failure" in text)
        assert (cause.node, cause.rank, cause.exit_code) == ("node1", 3, 1)
        assert cause.reason == "exit code 1: RuntimeError: injected failure on rank 3"
        assert cause.last_lines[-1] == "[rank3]: RuntimeError: injected failure on rank 3"
    else:
        killer.join()
        assert recorder.killed_at is not None
        failed_at = recorder.killed_at
        assert (cause.node, cause.rank, cause.exit_code) == ("node1", 2, -9)
        assert cause.reason == "killed by signal 9"
    assert ended - failed_at < 10, f"the job took {ended - failed_at:.1f} s to stop"
    print(f"{how}: failure -> every node stopped in {ended - failed_at:.1f} s")
    assert job_pids(plan.marker) == []  # every process of the job, on every node
    ranks_seen = {rank for _, _, rank, _ in recorder.lines if rank is not None}
    assert ranks_seen == {0, 1, 2, 3}
    assert not pwned.exists()
    assert job.read_state().root_cause == cause


def _kill_rank_2(marker: str, recorder: Recorder) -> None:
    wait_for(
        lambda: any(rank == 2 and "step 3" in text for _, _, rank, text in recorder.lines),
        60,
        "rank 2 running",
    )
    pid = rank_pid(marker, 2)
    assert pid is not None
    recorder.killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)


def test_local_machine_without_ssh(
    state_home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cluster: the job runs here, in the launch directory, through the local transport."""
    recipe = project / "local.yaml"
    recipe.write_text(
        "model: {name: tiny, tiny: {config: {model_type: llama, hidden_size: 64, "
        "intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4}}}\n"
        "training: {precision: fp32}\n"
    )
    request = LaunchRequest(
        recipe_path=recipe,
        cpu=True,
        nproc_per_node=2,
        cwd=project,
        program=(str(DIST_PROGRAM),),
        state_root=tuneboard_home(state_home),
    )
    prepared = prepare(request)
    assert prepared.target.local
    monkeypatch.setenv("TB_TEST_STEPS", "3")  # the local job inherits this environment
    with connect(prepared) as pool:
        checked = check(prepared, pool)
        assert checked.report.ok, checked.report.failures
        plan = plan_job(prepared, checked)
        job, state = create_job(prepared, plan)
        sync_files(prepared, plan, pool, job)
        recorder = Recorder()
        final = run_foreground(prepared, plan, pool, job, state, recorder)
    assert final.status == "succeeded", job.combined_log.read_text()[-2000:]
    assert (project / ".tuneboard" / "jobs" / plan.job_id / "local.yaml").is_file()
    assert {rank for _, _, rank, _ in recorder.lines if rank is not None} == {0, 1}
