"""`tuneboard launch` stopping: Ctrl-C, --detach then status/logs/stop from new processes, an
unreachable node, a failed copy, an unknown host key. Real sshd nodes on loopback, real
torchrun over gloo; "no process left" is checked by the job's marker in every environment.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher.cluster import Cluster
from launcher.job import node_process as proc
from launcher.job.control import stop_job
from launcher.job.launch import (
    LaunchRequest,
    check,
    connect,
    create_job,
    plan_job,
    prepare,
    run_foreground,
    sync_files,
)
from launcher.job.store import list_job_dirs
from launcher.transport.connect import open_transport
from tests.integration.launch_helpers import (
    DIST_PROGRAM,
    SECRET,
    Recorder,
    cli_env,
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
from tests.support.sshd import SshdCluster, descendants

pytestmark = pytest.mark.integration
__all__ = ["project", "state_home"]  # fixtures, used by name


# -- Ctrl-C, --detach and stop ------------------------------------------------------------------


def _start_other_job(
    sshd: SshdCluster, job_marker: Callable[[], str], tmp_path: Path
) -> tuple[proc.DetachedProcess, tuple[int, ...]]:
    """An unrelated job on node0 that nothing in the test may touch."""
    node = Cluster.from_hosts([sshd.nodes[0].host]).nodes[0]
    transport = open_transport(node, options(sshd))
    try:
        other = proc.start_detached(
            transport,
            [sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"],
            marker=job_marker(),
            pid_path=str(tmp_path / "other" / "job.pid"),
            log_path=str(tmp_path / "other" / "job.log"),
        )
        pids = proc.job_state(transport, other).pids
    finally:
        transport.close()
    assert len(pids) == 2  # wrapper and python
    return other, pids


def _wait_all_ranks(state: Path, world: int = 4, timeout_s: float = 90) -> str:
    wait_for(lambda: len(list_job_dirs(tuneboard_home(state))) == 1, 30, "job created")
    job = only_job(state)
    wait_for(lambda: job.read_state().status == "running", 30, "job started")
    marker = job.read_state().marker
    wait_for(
        lambda: all(rank_pid(marker, r) is not None for r in range(world)),
        timeout_s,
        "every rank running",
    )
    return marker


def test_ctrl_c_stops_the_job_everywhere_and_nothing_else(
    sshd_cluster: SshdCluster,
    state_home: Path,
    tmp_path: Path,
    job_marker: Callable[[], str],
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    recipe = tiny_recipe(sshd_cluster, shared, workdir=str(shared), shared_fs=True)
    other, other_pids = _start_other_job(sshd_cluster, job_marker, tmp_path)
    out = (tmp_path / "launch.out").open("w")
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuneboard",
            "launch",
            str(recipe),
            "--cpu",
            *known_hosts(sshd_cluster),
        ],
        cwd=shared,
        env=cli_env(state_home, {"HF_TOKEN": SECRET}),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        marker = _wait_all_ranks(state_home)
        rank3 = rank_pid(marker, 3)
        environ = Path(f"/proc/{rank3}/environ").read_bytes().split(b"\0")
        assert f"HF_TOKEN={SECRET}".encode() in environ  # the secret reached the rank
        interrupted = time.monotonic()
        launcher.send_signal(signal.SIGINT)
        code = launcher.wait(timeout=60)
        took = time.monotonic() - interrupted
    finally:
        if launcher.poll() is None:
            launcher.kill()
        out.close()
    output = (tmp_path / "launch.out").read_text()
    assert code == 130, output[-3000:]
    assert job_pids(marker) == []
    assert took < 15, f"Ctrl-C took {took:.1f} s"
    state = only_job(state_home).read_state()
    assert state.status == "stopped" and state.message == "interrupted (Ctrl-C)"
    assert sorted(job_pids(other.marker)) == sorted(other_pids)  # untouched
    assert leaked(SECRET, only_job(state_home).path, shared, tmp_path / "launch.out") == ""
    node = Cluster.from_hosts([sshd_cluster.nodes[0].host]).nodes[0]
    transport = open_transport(node, options(sshd_cluster))
    proc.stop(transport, other, grace_s=1)
    transport.close()


def test_detach_then_status_logs_and_stop_from_new_processes(
    sshd_cluster: SshdCluster,
    state_home: Path,
    tmp_path: Path,
    job_marker: Callable[[], str],
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    recipe = tiny_recipe(sshd_cluster, shared, workdir=str(shared), shared_fs=True)
    other, other_pids = _start_other_job(sshd_cluster, job_marker, tmp_path)
    started = time.monotonic()
    r = tb(
        "launch",
        str(recipe),
        "--cpu",
        "--detach",
        *known_hosts(sshd_cluster),
        state=state_home,
        cwd=shared,
    )
    returned = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = r.stdout.strip().splitlines()[-1]
    assert returned < 20, f"--detach took {returned:.1f} s to return"

    status = tb("status", job_id, "--json", state=state_home, cwd=tmp_path)
    data = json.loads(status.stdout)
    assert data["status"] == "running" and data["supervisor_alive"] is True
    follower = subprocess.Popen(
        [sys.executable, "-m", "tuneboard", "logs", job_id[:12], "-f"],
        cwd=tmp_path,
        env=cli_env(state_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marker = _wait_all_ranks(state_home)
    listed = json.loads(tb("jobs", "--json", state=state_home, cwd=tmp_path).stdout)
    assert [(j["id"], j["status"]) for j in listed] == [(job_id, "running")]

    stopped = tb("stop", job_id, state=state_home, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"job {job_id} stopped" in stopped.stdout
    assert job_pids(marker) == []
    logged, _ = follower.communicate(timeout=30)  # -f ends with the job
    assert "node0/torchrun " in logged and "node1/torchrun " in logged
    final = only_job(state_home).read_state()
    assert final.status == "stopped" and final.message == "stop requested (SIGTERM)"
    assert sorted(job_pids(other.marker)) == sorted(other_pids)
    again = tb("stop", job_id, state=state_home, cwd=tmp_path)
    assert "had already ended: stopped" in again.stdout


def test_an_unreachable_node_fails_the_job_and_is_stopped_later(
    sshd_cluster: SshdCluster, state_home: Path, project: Path, tmp_path: Path
) -> None:
    """node1's sshd freezes (SIGSTOP: its kernel still answers TCP, nothing else does, the
    hardest case to notice). Past --node-timeout the job fails naming node1, node0 is
    stopped; node1's processes are left (nothing can reach them) until `tuneboard stop`
    once node1 answers again."""
    recipe = tiny_recipe(
        sshd_cluster, project, workdir=f"{tmp_path}/nodes/{{node_rank}}", env={"TB_TEST_STEPS": "0"}
    )
    request = LaunchRequest(
        recipe_path=recipe,
        cpu=True,
        cwd=project,
        program=(str(DIST_PROGRAM),),
        connect=dataclasses.replace(options(sshd_cluster), connect_timeout_s=2.0),
        state_root=tuneboard_home(state_home),
        grace_s=2.0,
        node_timeout_s=3.0,
    )
    node1 = sshd_cluster.nodes[1]
    frozen: list[int] = []
    recorder = Recorder()

    def freeze_node1() -> None:
        wait_for(lambda: sum(" up, pid " in t for _, _, _, t in recorder.lines) == 4, 90, "up")
        frozen.extend([node1.pid, *descendants(node1.pid)])
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        recorder.killed_at = time.monotonic()

    prepared = prepare(request)
    try:
        with connect(prepared) as pool:
            checked = check(prepared, pool)
            plan = plan_job(prepared, checked)
            job, state = create_job(prepared, plan)
            sync_files(prepared, plan, pool, job)
            freezer = threading.Thread(target=freeze_node1, daemon=True)
            freezer.start()
            final = run_foreground(prepared, plan, pool, job, state, recorder)
            ended = time.monotonic()
            freezer.join()
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert recorder.killed_at is not None
    took = ended - recorder.killed_at
    cause = final.root_cause
    assert final.status == "failed" and cause is not None
    assert cause.node == "node1" and cause.reason.startswith("unreachable for ")
    assert took < 25, f"a frozen node took {took:.1f} s to fail the job"
    assert final.nodes[0].status in ("exited", "stopped")  # node0: its torchrun got our TERM
    assert final.nodes[1].status == "unreachable"
    assert final.message is not None and f"tuneboard stop {final.id}" in final.message
    assert job_pids(plan.node_marker(plan.nodes[0])) == []
    left = job_pids(plan.node_marker(plan.nodes[1]))
    assert left, "node1's ranks are beyond reach while it is frozen"

    outcome = stop_job(job)  # node1 answers again
    assert outcome.how == "direct"
    assert job_pids(plan.marker) == []
    after = job.read_state()
    assert after.status == "failed" and after.nodes[1].status == "stopped"
    print(f"frozen node -> job failed and node0 stopped in {took:.1f} s")


def test_a_copy_that_fails_starts_nothing(
    sshd_cluster: SshdCluster, state_home: Path, project: Path, tmp_path: Path
) -> None:
    (tmp_path / "w1").write_text("a file where node1's workdir should be\n")
    recipe = tiny_recipe(sshd_cluster, project, workdir=f"{tmp_path}/w{{node_rank}}")
    r = tb(
        "launch", str(recipe), "--cpu", *known_hosts(sshd_cluster), state=state_home, cwd=project
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "copying files to node1 failed" in r.stderr and "nothing was started" in r.stderr
    state = only_job(state_home).read_state()
    assert state.status == "failed" and state.started_at is None
    assert job_pids(state.marker) == []
    assert not (tmp_path / "w0" / ".tuneboard" / "jobs" / state.id / "node0").exists()


def test_an_unknown_host_is_refused_until_trusted(
    sshd_cluster: SshdCluster, state_home: Path, project: Path, tmp_path: Path
) -> None:
    recipe = tiny_recipe(sshd_cluster, project, workdir=str(tmp_path / "w"))
    known = tmp_path / "known_hosts"
    args = ["launch", str(recipe), "--cpu", "--dry-run", "--known-hosts", str(known)]
    refused = tb(*args, state=state_home, cwd=project)
    assert refused.returncode == 3
    fingerprint = sshd_cluster.nodes[0].fingerprint()
    line = next(x for x in refused.stdout.splitlines() if x.startswith("✗ node0 ssh:"))
    assert fingerprint in line and "--trust-new-hosts" in line
    assert not known.exists()
    trusted = tb(*args, "--trust-new-hosts", state=state_home, cwd=project)
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert known.read_text().count("\n") == 2  # both nodes recorded, as OpenSSH writes them
    assert tb(*args, state=state_home, cwd=project).returncode == 0  # known from now on
