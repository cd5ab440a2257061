"""Fixtures for integration tests: real sshd nodes on loopback, and job clean-up."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.sshd import SshdCluster, skip_reason, start_cluster

#: Nodes started once per test session (per xdist worker).
SSHD_NODES = 3


@pytest.fixture(scope="session")
def sshd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdCluster]:
    """Real sshd nodes on 127.0.0.2.., skipped (with the reason) where they cannot run."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = start_cluster(tmp_path_factory.mktemp("sshd"), SSHD_NODES)
    try:
        yield cluster
    finally:
        cluster.stop()


def pids_with_env(entry: str) -> list[int]:
    """Local pids whose initial environment holds `entry` (NAME=value), like the launcher."""
    needle = entry.encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


@pytest.fixture
def job_marker() -> Iterator[Callable[[], str]]:
    """Unique job markers; every process still carrying one is KILLed after the test."""
    made: list[str] = []

    def make() -> str:
        marker = f"test-{uuid.uuid4().hex[:12]}"
        made.append(marker)
        return marker

    yield make
    for marker in made:
        for pid in pids_with_env(f"TUNEBOARD_JOB={marker}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
