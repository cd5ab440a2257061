"""Real OpenSSH servers on loopback, as plain processes: the cluster the launcher tests use.

Each node is `sshd -D` (no daemon) listening on its own loopback address and a free
port (127.0.0.2:PORT, 127.0.0.3:PORT, ...), with its own ed25519 host key; one client
key is authorized on all of them and a known_hosts file (`[addr]:port` entries) lists
them. Everything lives in one temporary folder, addressed by absolute paths (sshd
chdirs to /). sshd writes its PidFile only once its port is bound: that is the
readiness signal. Needs root (sshd switches to the login user) and openssh-server:
`apt-get update && apt-get install -y openssh-server`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.transport.base import ConnectOptions

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
READY_TIMEOUT_S = 10.0


def find_sshd() -> Path | None:
    found = shutil.which("sshd")
    for candidate in ([found] if found else []) + list(SSHD_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def skip_reason() -> str | None:
    """Why real sshd nodes cannot run here, or None if they can."""
    if find_sshd() is None:
        return "sshd not installed (apt-get update && apt-get install -y openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not installed (apt-get install -y openssh-client)"
    if os.geteuid() != 0:
        return "sshd on loopback needs root (it switches to the login user)"
    return None


@dataclass(frozen=True)
class SshdNode:
    index: int
    address: str
    port: int
    host_key: Path
    host_key_pub: Path
    pid: int
    log: Path

    @property
    def host(self) -> str:
        """As written in a hostfile: `127.0.0.2:PORT`."""
        return f"{self.address}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return f"[{self.address}]:{self.port}"

    def known_hosts_line(self) -> str:
        key_type, blob = self.host_key_pub.read_text().split()[:2]
        return f"{self.known_hosts_name} {key_type} {blob}\n"

    def fingerprint(self) -> str:
        """The SHA256 fingerprint as OpenSSH's ssh-keygen prints it."""
        out = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", str(self.host_key_pub)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.split()[1]


class SshdCluster:
    """N running sshd nodes, a client key authorized on all, and a known_hosts for them."""

    def __init__(
        self,
        root: Path,
        nodes: tuple[SshdNode, ...],
        procs: list[subprocess.Popen[bytes]],
        client_key: Path,
        known_hosts: Path,
        start_s: float,
    ) -> None:
        self.root = root
        self.nodes = nodes
        self.client_key = client_key
        self.known_hosts = known_hosts
        self.start_s = start_s
        self.user = "root"
        self._procs = procs

    def connect_options(self, **changes: Any) -> ConnectOptions:
        """How a client reaches these nodes: this cluster's key and known_hosts only (no
        ssh agent, no ~/.ssh files), as root; `changes` override fields."""
        options = ConnectOptions(
            known_hosts=self.known_hosts,
            system_known_hosts=None,
            ssh_config=None,
            user=self.user,
            identity_files=(self.client_key,),
            use_agent=False,
            look_for_keys=False,
            connect_timeout_s=5.0,
        )
        return dataclasses.replace(options, **changes)

    def kill_node(self, index: int) -> list[int]:
        """KILL node `index`'s sshd and everything under it (its sessions and their
        commands), as when the node drops off the network; returns the pids killed."""
        proc = self._procs[index]
        victims = [proc.pid, *descendants(proc.pid)]
        for pid in victims:
            _signal(pid, signal.SIGKILL)
        proc.wait(timeout=5)
        return victims

    def restart_node(self, index: int) -> SshdNode:
        """Start node `index`'s sshd again: same address, port, host key and config."""
        node = self.nodes[index]
        node_dir = node.host_key.parent
        (node_dir / "sshd.pid").unlink(missing_ok=True)
        sshd = find_sshd()
        assert sshd is not None
        proc = subprocess.Popen(
            [str(sshd), "-D", "-f", str(node_dir / "sshd_config"), "-E", str(node.log)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_ready(proc, node_dir / "sshd.pid", node.log)
        self._procs[index] = proc
        restarted = dataclasses.replace(node, pid=proc.pid)
        self.nodes = (*self.nodes[:index], restarted, *self.nodes[index + 1 :])
        return restarted

    def stop(self) -> None:
        """TERM each listener and its per-connection children; KILL what lingers."""
        victims: list[int] = []
        for proc in self._procs:
            victims += [proc.pid, *descendants(proc.pid)]
        for pid in victims:
            _signal(pid, signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in victims:
            _signal(pid, signal.SIGKILL)


def start_cluster(root: Path, n: int) -> SshdCluster:
    sshd = find_sshd()
    if sshd is None:
        raise RuntimeError(skip_reason())
    started = time.perf_counter()
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation dir
    root.mkdir(parents=True, exist_ok=True)
    client_key = root / "client_ed25519"
    host_keys = [root / f"node{i}" / "host_ed25519" for i in range(n)]
    for key in host_keys:
        key.parent.mkdir()
    _keygen([client_key, *host_keys])
    authorized = root / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    procs: list[subprocess.Popen[bytes]] = []
    pending: list[tuple[int, str, int, Path]] = []
    for i, key in enumerate(host_keys):
        address = f"127.0.0.{2 + i}"
        port = _free_port(address)
        node_dir = key.parent
        config = node_dir / "sshd_config"
        config.write_text(_config(address, port, key, node_dir, authorized))
        log = node_dir / "sshd.log"
        procs.append(
            subprocess.Popen(
                [str(sshd), "-D", "-f", str(config), "-E", str(log)],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        pending.append((i, address, port, node_dir))
    nodes = []
    try:
        for (i, address, port, node_dir), proc in zip(pending, procs, strict=True):
            _wait_ready(proc, node_dir / "sshd.pid", node_dir / "sshd.log")
            key = host_keys[i]
            nodes.append(
                SshdNode(
                    i, address, port, key, key.with_suffix(".pub"), proc.pid, node_dir / "sshd.log"
                )
            )
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    known_hosts = root / "known_hosts"
    known_hosts.write_text("".join(node.known_hosts_line() for node in nodes))
    return SshdCluster(
        root, tuple(nodes), procs, client_key, known_hosts, time.perf_counter() - started
    )


def _config(address: str, port: int, host_key: Path, node_dir: Path, authorized: Path) -> str:
    return f"""\
ListenAddress {address}:{port}
HostKey {host_key}
PidFile {node_dir / "sshd.pid"}
AuthorizedKeysFile {authorized}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
MaxStartups 100
LogLevel INFO
"""


def _keygen(paths: list[Path]) -> None:
    """ed25519 keys, generated in parallel (each ssh-keygen takes a few ms)."""
    procs = [
        subprocess.Popen(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
            stdin=subprocess.DEVNULL,
        )
        for path in paths
    ]
    for proc, path in zip(procs, paths, strict=True):
        if proc.wait() != 0:
            raise RuntimeError(f"ssh-keygen failed for {path}")


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(proc: subprocess.Popen[bytes], pid_file: Path, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not pid_file.exists():
        if proc.poll() is not None:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"sshd exited with {proc.returncode}: {text.strip()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd wrote no pid file within {READY_TIMEOUT_S} s: {pid_file}")
        time.sleep(0.002)


def descendants(pid: int) -> list[int]:
    """Processes under pid (sshd's per-connection children), from /proc's PPid fields."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return  # already gone: nothing to do
