"""Helpers for the launch tests: recipes pointing at the loopback sshd nodes, the CLI as a
subprocess, and the job's processes as /proc shows them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.job.store import JobDir, Progress, jobs_root, list_job_dirs
from launcher.transport.base import ConnectOptions
from recipes.train.toy_data import write as write_tiny_data
from tests.conftest import ROOT
from tests.support.sshd import SshdCluster

TINY_RECIPE = ROOT / "recipes" / "configs" / "tiny-sft-lora.yaml"
DIST_PROGRAM = Path(__file__).with_name("dist_program.py")
SECRET = "hf_launchSECRET-7c1e9a0b55"


def free_port(address: str = "127.0.0.2") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def options(sshd: SshdCluster) -> ConnectOptions:
    return sshd.connect_options()


def tiny_recipe(
    sshd: SshdCluster,
    project: Path,
    *,
    nodes: int = 2,
    workdir: str,
    shared_fs: bool = False,
    master_port: int | None = None,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    training: Mapping[str, Any] | None = None,
    name: str = "tiny.yaml",
) -> Path:
    """recipes/configs/tiny-sft-lora.yaml with a `cluster:` of loopback sshd nodes, and its
    data written under `project` (the directory the launch runs from)."""
    write_tiny_data(project / "data" / "tiny", 64, 0)
    recipe = yaml.safe_load(TINY_RECIPE.read_text())
    recipe["training"].update(training or {})
    recipe["cluster"] = {
        "nodes": [
            {
                "address": node.address,
                "port": node.port,
                "user": sshd.user,
                "key": str(sshd.client_key),
                "name": f"node{node.index}",
            }
            for node in sshd.nodes[:nodes]
        ],
        "gpus_per_node": 2,
        "workdir": workdir,
        "shared_fs": shared_fs,
        "python": python,
        "master_port": master_port or free_port(),
        "env": dict(env or {}),
    }
    path = project / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def tb(
    *args: str,
    state: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """`tuneboard ARGS` in a fresh process (the launch and jobs commands)."""
    return subprocess.run(
        [sys.executable, "-m", "tuneboard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env(state, env),
        timeout=timeout,
    )


def cli_env(state: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "XDG_STATE_HOME": str(state),
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "160",
        "NO_COLOR": "1",
        **(env or {}),
    }


def job_pids(marker: str) -> list[int]:
    """Live processes of a job, on every loopback node (they are all this machine): those
    whose TUNEBOARD_JOB is the job's marker or one of its per-node markers (`marker.nR`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"TUNEBOARD_JOB="):
                value = item.split(b"=", 1)[1].decode(errors="replace")
                if value == marker or value.startswith(marker + ".n"):
                    found.append(int(entry.name))
    return found


def rank_pid(marker: str, rank: int) -> int | None:
    """The worker process of one global rank of a job."""
    for pid in job_pids(marker):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"torch.distributed.run" not in cmdline:
            return pid
    return None


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def tuneboard_home(state: Path) -> Path:
    """$XDG_STATE_HOME -> the folder tuneboard keeps its jobs in (a LaunchRequest's state_root)."""
    return state / "tuneboard"


def kill_jobs_in(state: Path) -> None:
    """Teardown: KILL whatever a test left running of the jobs under `state`."""
    root = tuneboard_home(state)
    if not jobs_root(root).is_dir():
        return
    for job in list_job_dirs(root):
        marker = job.read_state().marker
        for pid in job_pids(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


@pytest.fixture
def state_home(tmp_path: Path) -> Iterator[Path]:
    """A private $XDG_STATE_HOME; every job launched under it is killed at teardown."""
    state = tmp_path / "state"
    state.mkdir()
    try:
        yield state
    finally:
        kill_jobs_in(state)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def known_hosts(sshd: SshdCluster) -> list[str]:
    return ["--known-hosts", str(sshd.known_hosts)]


def only_job(state: Path) -> JobDir:
    [job] = list_job_dirs(tuneboard_home(state))
    return job


def leaked(secret: str, *folders: Path) -> str:
    found = subprocess.run(
        ["grep", "-rl", "-F", secret, *map(str, folders)], capture_output=True, text=True
    )
    return found.stdout


class Recorder:
    """A launch sink that keeps every line (with its arrival time) and event."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str, int | None, str]] = []
        self.events: list[str] = []
        self.killed_at: float | None = None

    def line(self, node: str, rank: int | None, text: str) -> None:
        self.lines.append((time.monotonic(), node, rank, text))

    def progress(self, progress: Progress) -> None:
        del progress

    def event(self, text: str) -> None:
        self.events.append(text)
