"""known_hosts lines written by --trust-new-hosts, and the fingerprint format."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from launcher.errors import HostKeyUnknownError
from launcher.transport.host_keys import StrictHostKeyPolicy, fingerprint_sha256, record_host_key


@pytest.fixture(scope="module")
def key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


def test_fingerprint_matches_ssh_keygen(key: paramiko.PKey, tmp_path: Path) -> None:
    pub = tmp_path / "key.pub"
    pub.write_text(f"{key.get_name()} {key.get_base64()}\n")
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip("ssh-keygen not available")
    assert fingerprint_sha256(key) == out.stdout.split()[1]


def test_record_appends_a_line_openssh_reads(key: paramiko.PKey, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("# a file without a final newline")
    record_host_key(known, "[10.0.0.1]:2222", key)
    record_host_key(known, "node2", key)
    lines = known.read_text().splitlines()
    assert lines == [
        "# a file without a final newline",
        f"[10.0.0.1]:2222 {key.get_name()} {key.get_base64()}",
        f"node2 {key.get_name()} {key.get_base64()}",
    ]
    loaded = paramiko.HostKeys(str(known))
    assert loaded.lookup("[10.0.0.1]:2222") is not None


def test_policy_refuses_or_records(key: paramiko.PKey, tmp_path: Path) -> None:
    known = tmp_path / "new" / "known_hosts"
    client = paramiko.SSHClient()
    refuse = StrictHostKeyPolicy("n1", known, trust_new_hosts=False)
    with pytest.raises(HostKeyUnknownError, match="--trust-new-hosts") as err:
        refuse.missing_host_key(client, "n1", key)
    assert err.value.fingerprint == fingerprint_sha256(key)
    assert not known.exists()
    StrictHostKeyPolicy("n1", known, trust_new_hosts=True).missing_host_key(client, "n1", key)
    assert client.get_host_keys().lookup("n1") is not None
    assert known.stat().st_mode & 0o777 == 0o600
    assert known.parent.stat().st_mode & 0o777 == 0o700
