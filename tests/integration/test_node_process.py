"""Detached jobs on a node (launcher/job/node_process.py), over real sshd nodes on loopback and
the local machine: start, survive a disconnect, stop the whole job and nothing else, and
never show a secret.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher.cluster import Cluster
from launcher.job import node_process as proc
from launcher.job.log_follower import LogFollower, follow
from launcher.transport.base import ConnectOptions, Transport
from launcher.transport.connect import open_transport
from launcher.transport.local import LocalTransport
from launcher.transport.ssh import SshTransport
from tests.integration.conftest import pids_with_env
from tests.integration.transport_fixtures import (
    SECRET,
    cmdlines,
    node_of,
    options,
    ssh0,
    transport,
    wait_for,
)
from tests.support.sshd import SshdCluster

pytestmark = pytest.mark.integration
__all__ = ["options", "ssh0", "transport"]  # fixtures, used by name


# -- detached jobs --------------------------------------------------------------------------

CHATTY = """\
import itertools, time
for i in itertools.count():
    print(i, flush=True)
    time.sleep(0.05)
"""

# torchrun-like: the "agent" starts its "worker" in a NEW session (torch 2.13 does), and
# the worker ignores TERM (like a stuck or SIGSTOPped rank): only the marker KILL gets it.
SPAWNER = """\
import signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", '''
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("worker up", flush=True)
while True:
    time.sleep(0.1)
'''], start_new_session=True)
print(f"worker {worker.pid}", flush=True)
while True:
    time.sleep(0.1)
"""


def start_spawner(
    transport: Transport, marker: str, workdir: Path
) -> tuple[proc.DetachedProcess, int]:
    job = proc.start_detached(
        transport,
        [sys.executable, "-c", SPAWNER],
        marker=marker,
        pid_path=str(workdir / marker / "job.pid"),
        log_path=str(workdir / marker / "job.log"),
    )
    log = workdir / marker / "job.log"
    wait_for(lambda: "worker up" in log.read_text())
    worker = int(log.read_text().split("worker ", 1)[1].split()[0])
    return job, worker


def session_and_group(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[3]), int(fields[2])  # (session, pgrp)


def test_stop_kills_the_whole_job_and_nothing_else(
    transport: Transport, job_marker: Callable[[], str], tmp_path: Path
) -> None:
    job_a, worker_a = start_spawner(transport, job_marker(), tmp_path)
    job_b, worker_b = start_spawner(transport, job_marker(), tmp_path)
    assert session_and_group(worker_a)[0] == worker_a != job_a.pgid  # its own session
    b_before = set(pids_with_env(f"TUNEBOARD_JOB={job_b.marker}"))
    assert worker_b in b_before and len(b_before) == 3  # wrapper, agent, worker

    result = proc.stop(transport, job_a, grace_s=1.0)

    assert result.group_signalled
    assert worker_a in result.found and result.killed == (worker_a,)  # TERM alone left it
    assert result.left == ()
    assert pids_with_env(f"TUNEBOARD_JOB={job_a.marker}") == []
    assert not proc.job_state(transport, job_a).running
    assert set(pids_with_env(f"TUNEBOARD_JOB={job_b.marker}")) == b_before  # untouched
    assert proc.job_state(transport, job_b).pids == tuple(sorted(b_before))
    proc.stop(transport, job_b, grace_s=0.5)
    assert pids_with_env(f"TUNEBOARD_JOB={job_b.marker}") == []


def test_exit_code_is_recorded(
    transport: Transport, job_marker: Callable[[], str], tmp_path: Path
) -> None:
    job = proc.start_detached(
        transport,
        ["sh", "-c", "echo done; exit 3"],
        marker=job_marker(),
        pid_path=str(tmp_path / "job.pid"),
        log_path=str(tmp_path / "logs" / "job.log"),
    )
    wait_for(lambda: proc.job_state(transport, job).exit_code is not None)
    state = proc.job_state(transport, job)
    assert state == proc.ProcessState(pids=(), exit_code=3)
    assert (tmp_path / "logs" / "job.log").read_text() == "done\n"
    assert (tmp_path / "logs" / "job.log").stat().st_mode & 0o777 == 0o600


def test_detached_job_survives_client_disconnect(
    sshd_cluster: SshdCluster,
    options: ConnectOptions,
    job_marker: Callable[[], str],
    tmp_path: Path,
) -> None:
    node = node_of(sshd_cluster.nodes[1])
    log = str(tmp_path / "job.log")
    first = open_transport(node, options)
    job = proc.start_detached(
        first,
        [sys.executable, "-c", CHATTY],
        marker=job_marker(),
        pid_path=str(tmp_path / "job.pid"),
        log_path=log,
    )
    wait_for(lambda: Path(log).stat().st_size > 0)
    first.close()  # the launching client goes away
    size_at_close = Path(log).stat().st_size
    time.sleep(0.5)

    second = open_transport(node, options)
    try:
        assert proc.job_state(second, job).running
        assert Path(log).stat().st_size > size_at_close  # it kept writing
        lines: list[str] = []
        stopper = threading.Timer(0.3, lambda: proc.stop(second, job, grace_s=2))
        stopper.start()
        follow(
            LogFollower(second, log),
            lines.append,
            done=lambda: not proc.job_state(second, job).running,
            poll_s=0.05,
        )
        stopper.join()
        numbers = [int(x) for x in lines if x.isdigit()]
        assert numbers == list(range(len(numbers))) and len(numbers) > 10
    finally:
        second.close()


def test_secrets_never_on_a_command_line_or_in_a_file(
    sshd_cluster: SshdCluster,
    ssh0: Transport,
    job_marker: Callable[[], str],
    tmp_path: Path,
) -> None:
    seen_in_argv: list[bytes] = []
    done = threading.Event()

    def watch() -> None:  # every process's argv, sampled all the time the test runs
        while not done.is_set():
            seen_in_argv.extend(c for c in cmdlines() if SECRET.encode() in c)

    watcher = threading.Thread(target=watch)
    watcher.start()
    env = {"HF_TOKEN": SECRET, "WANDB_API_KEY": SECRET + "-w"}
    try:
        assert ssh0.run(["printenv", "HF_TOKEN"], env=env).stdout.strip() == SECRET
        job = proc.start_detached(
            ssh0,
            [sys.executable, "-c", "import time; time.sleep(30)"],
            marker=job_marker(),
            pid_path=str(tmp_path / "job.pid"),
            log_path=str(tmp_path / "job.log"),
            env=env,
        )
        job_pids = proc.job_state(ssh0, job).pids
        environ = Path(f"/proc/{max(job_pids)}/environ").read_bytes().split(b"\0")
        assert f"HF_TOKEN={SECRET}".encode() in environ  # it reached the job
        time.sleep(0.2)
        proc.stop(ssh0, job, grace_s=1)
    finally:
        done.set()
        watcher.join()
    assert seen_in_argv == []
    leaks = subprocess.run(
        ["grep", "-rl", "-F", SECRET, str(tmp_path), str(sshd_cluster.root)],
        capture_output=True,
        text=True,
    )
    assert leaks.stdout == "", f"secret written to: {leaks.stdout}"


def test_local_cluster_uses_the_local_transport() -> None:
    transport = open_transport(Cluster.local().master)
    assert isinstance(transport, LocalTransport)
    assert transport.run(["true"]).ok


def test_ssh_transport_type(ssh0: Transport) -> None:
    assert isinstance(ssh0, SshTransport)
    assert ssh0.is_connected()
