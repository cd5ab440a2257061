"""Host key checking against known_hosts, as strict as OpenSSH's StrictHostKeyChecking=yes.

- A known key that matches: connect.
- An unknown host: refused with the key's SHA256 fingerprint (the same string
  `ssh-keygen -lf` prints on the node) and the flag that trusts it; with
  `--trust-new-hosts` the key is appended to known_hosts (`[host]:port` off port 22,
  as OpenSSH writes it) and the connection goes on.
- A changed key: paramiko raises BadHostKeyException; the transport turns it into
  HostKeyChangedError. Never overridden by any flag.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry

from launcher.errors import HostKeyUnknownError

_append_lock = threading.Lock()


def fingerprint_sha256(key: paramiko.PKey) -> str:
    """`SHA256:<base64, no padding>` of the key blob: OpenSSH's fingerprint format."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {fingerprint_sha256(key)}"


def load_known_hosts(client: paramiko.SSHClient, path: Path, system: Path | None) -> None:
    """Give client the keys of both files (the system one read-only, as OpenSSH does)."""
    if system is not None and system.exists():
        client.load_system_host_keys(str(system))
    if path.exists():
        client.get_host_keys().load(str(path))


def record_host_key(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append `name keytype base64` to known_hosts (created 0600 in a 0700 folder)."""
    line = HostKeyEntry([name], key).to_line()
    if line is None:
        raise ValueError(f"cannot write a known_hosts line for {name}")
    with _append_lock:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as f:
            if f.tell() > 0 and not _ends_with_newline(path):
                f.write("\n")
            f.write(line)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


class StrictHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown hosts, or record them when the user said --trust-new-hosts."""

    def __init__(self, node: str, known_hosts: Path, *, trust_new_hosts: bool) -> None:
        self._node = node
        self._known_hosts = known_hosts
        self._trust = trust_new_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self._trust:
            raise HostKeyUnknownError(self._node, hostname, key.get_name(), fingerprint_sha256(key))
        client.get_host_keys().add(hostname, key.get_name(), key)
        record_host_key(self._known_hosts, hostname, key)
