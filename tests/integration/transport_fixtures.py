"""Transports to the real sshd nodes (and to this machine) for the transport and
detached-process tests, and what those tests look at in /proc."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher.cluster import Cluster, Node
from launcher.transport.base import ConnectOptions, Transport
from launcher.transport.connect import open_transport
from launcher.transport.local import LocalTransport
from tests.support.sshd import SshdCluster, SshdNode

SECRET = "hf_SECRETtoken-4f9c2d7a1b"


def node_of(sshd: SshdNode) -> Node:
    return Cluster.from_hosts([sshd.host]).nodes[0]


@pytest.fixture(scope="module")
def options(sshd_cluster: SshdCluster) -> ConnectOptions:
    return ConnectOptions(
        known_hosts=sshd_cluster.known_hosts,
        system_known_hosts=None,
        ssh_config=None,
        user=sshd_cluster.user,
        identity_files=(sshd_cluster.client_key,),
        use_agent=False,
        look_for_keys=False,
        connect_timeout_s=5.0,
    )


@pytest.fixture(scope="module")
def ssh0(sshd_cluster: SshdCluster, options: ConnectOptions) -> Iterator[Transport]:
    transport = open_transport(node_of(sshd_cluster.nodes[0]), options)
    yield transport
    transport.close()


@pytest.fixture(params=["local", "ssh"])
def transport(request: pytest.FixtureRequest) -> Transport:
    if request.param == "local":
        return LocalTransport()
    ssh: Transport = request.getfixturevalue("ssh0")
    return ssh


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def cmdlines() -> list[bytes]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes())
            except OSError:
                continue
    return out
