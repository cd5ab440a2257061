"""Hostfiles, host strings, ssh_config resolution and remote command building (no sshd)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest

from launcher.cluster import Cluster, Node, parse_host, parse_hostfile
from launcher.errors import LauncherInputError
from launcher.job.node_process import check_marker
from launcher.transport.line_buffer import LineBuffer
from launcher.transport.remote_shell import env_line, join_argv, remote_command
from launcher.transport.ssh_config import resolve_target

# -- hostfiles ------------------------------------------------------------------------------


def test_deepspeed_hostfile() -> None:
    cluster = parse_hostfile(
        "# three nodes\n"
        "worker-1 slots=8\n"
        "\n"
        "deploy@worker-2:2222 slots=8   # another port\n"
        "10.0.0.7\n"
        "[fe80::1]:22 slots=4\n",
        "hosts.txt",
    )
    assert cluster.nodes == (
        Node("worker-1", slots=8),
        Node("worker-2", port=2222, user="deploy", slots=8),
        Node("10.0.0.7"),
        Node("fe80::1", port=22, slots=4),
    )
    assert cluster.master.name == "worker-1"
    assert [n.name for n in cluster.nodes] == [
        "worker-1",
        "worker-2:2222",
        "10.0.0.7",
        "[fe80::1]:22",
    ]
    assert not cluster.is_local


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "a slots=8\nb slots=eight\n",
            "hosts.txt:2: 'b slots=eight': slots must be a whole number",
        ),
        ("a slots=0\n", "hosts.txt:1: 'a slots=0': slots must be a whole number ≥ 1"),
        ("a gpus=8\n", "hosts.txt:1: 'a gpus=8': unexpected 'gpus=8'"),
        ("a slots=8 slots=4\n", "slots given twice"),
        ("a\n\nb\na\n", "hosts.txt:4: 'a': node a is already listed at hosts.txt:1"),
        ("a:99999\n", "hosts.txt:1: 'a:99999': port must be 1-65535, got '99999'"),
        ("a:x\n", "port must be 1-65535, got 'x'"),
        ("-oProxyCommand=x\n", "'-oProxyCommand=x' is not a host name"),
        ("bad user@a\n", "unexpected 'user@a'"),
        ("us er@a\n", "unexpected"),
        ("$(x)@a\n", "'$(x)' is not a user name"),
        ("[fe80::1\n", "is not `[ipv6-address]`"),
        ("# only comments\n\n", "hostfile hosts.txt: no hosts"),
    ],
)
def test_hostfile_errors_name_the_line(text: str, needle: str) -> None:
    with pytest.raises(LauncherInputError) as err:
        parse_hostfile(text, "hosts.txt")
    assert needle in str(err.value)


def test_hostfile_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "hostfile"
    path.write_text("n1 slots=2\nn2 slots=2\n")
    assert [n.host for n in Cluster.from_hostfile(path).nodes] == ["n1", "n2"]
    with pytest.raises(LauncherInputError, match="cannot read hostfile"):
        Cluster.from_hostfile(tmp_path / "missing")


def test_host_list_and_local() -> None:
    cluster = Cluster.from_hosts(["127.0.0.2:2201", "127.0.0.2:2202 slots=2"])
    assert [n.name for n in cluster.nodes] == ["127.0.0.2:2201", "127.0.0.2:2202"]
    with pytest.raises(LauncherInputError, match=r"hosts\[1\]: empty host"):
        Cluster.from_hosts(["a", " "])
    with pytest.raises(LauncherInputError, match="no hosts"):
        Cluster.from_hosts([])
    labelled = Node("10.0.0.1", port=2222, label="gpu-a")
    assert labelled.name == "gpu-a"
    with pytest.raises(LauncherInputError, match=r"names must be unique: \['gpu-a'\]"):
        Cluster((labelled, Node("10.0.0.2", label="gpu-a")), "recipe")
    with pytest.raises(LauncherInputError, match="recipe: no nodes"):
        Cluster((), "recipe")
    local = Cluster.local(slots=2)
    assert local.is_local and local.master.local and local.master.slots == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node1", (None, "node1", None)),
        ("me@node1", ("me", "node1", None)),
        ("me@node1:2200", ("me", "node1", 2200)),
        ("10.1.2.3:22", (None, "10.1.2.3", 22)),
        ("::1", (None, "::1", None)),
        ("[::1]", (None, "::1", None)),
        ("root@[::1]:2222", ("root", "::1", 2222)),
    ],
)
def test_host_strings(text: str, expected: tuple[str | None, str, int | None]) -> None:
    assert parse_host(text, where="test") == expected


# -- ssh_config -----------------------------------------------------------------------------


def test_ssh_config_applies_with_openssh_precedence(tmp_path: Path) -> None:
    config = paramiko.SSHConfig.from_text(
        "Host gpu*\n  HostName %h.cluster.internal\n  User trainer\n  Port 2200\n"
        "  IdentityFile ~/.ssh/cluster_key\n"
        "Host *\n  User fallback\n"
    )
    target = resolve_target(Node("gpu1"), config)
    assert (target.hostname, target.port, target.user) == ("gpu1.cluster.internal", 2200, "trainer")
    assert target.identity_files == (Path("~/.ssh/cluster_key").expanduser(),)
    assert target.known_hosts_name == "[gpu1.cluster.internal]:2200"
    explicit = resolve_target(Node("gpu1", port=22, user="me"), config)  # host string wins
    assert (explicit.port, explicit.user, explicit.known_hosts_name) == (
        22,
        "me",
        "gpu1.cluster.internal",
    )
    other = resolve_target(Node("cpu1"), config, default_user="ignored")
    assert (other.hostname, other.port, other.user) == ("cpu1", 22, "fallback")
    assert resolve_target(Node("x"), None, default_user="bob").user == "bob"


def test_jump_hosts_are_refused_clearly() -> None:
    config = paramiko.SSHConfig.from_text("Host behind\n  ProxyJump bastion\n")
    with pytest.raises(LauncherInputError, match="behind: ssh config sets proxyjump"):
        resolve_target(Node("behind"), config)


# -- remote commands ------------------------------------------------------------------------

TRICKY = ["out; touch /tmp/pwned", "$(id)", "`id`", "a'b\"c", "two\nlines", "*", "", "-n", "\\"]


def test_join_argv_quotes_every_argument() -> None:
    assert join_argv(["echo", "out; touch /tmp/pwned"]) == "echo 'out; touch /tmp/pwned'"
    assert join_argv(["a b", "", "plain"]) == "'a b' '' plain"
    with pytest.raises(LauncherInputError, match="not the string"):
        join_argv("rm -rf /")
    with pytest.raises(LauncherInputError, match="NUL"):
        join_argv(["a\0b"])
    with pytest.raises(LauncherInputError, match="empty command"):
        join_argv([])


def test_env_line_quotes_values_and_refuses_bad_names() -> None:
    assert env_line(None) == b"\n"
    assert env_line({"A": "x y", "B": "it's"}) == b"export A='x y' B='it'\"'\"'s'\n"
    with pytest.raises(LauncherInputError, match="'1A' is not valid"):
        env_line({"1A": "x"})
    with pytest.raises(LauncherInputError, match="HF_TOKEN") as err:
        env_line({"HF_TOKEN": "abc\ndef"})
    assert "abc" not in str(err.value)


@pytest.mark.parametrize("login_shell", ["sh", "bash"])
def test_remote_command_round_trips_through_a_login_shell(login_shell: str) -> None:
    """What sshd does with the string: `$SHELL -c STRING`, env line and stdin on stdin."""
    if shutil.which(login_shell) is None:
        pytest.skip(f"{login_shell} not installed")
    secret = "s3cr3t 'quoted' $HOME"
    command = remote_command(
        ["sh", "-c", 'printf "%s\\0" "$@"; printf "%s" "$TOKEN"; cat', "x", *TRICKY],
        cwd="/tmp",
        timeout_s=None,
    )
    assert secret not in command
    out = subprocess.run(
        [login_shell, "-c", command],
        input=env_line({"TOKEN": secret}) + b"rest of stdin",
        capture_output=True,
        check=True,
    ).stdout.decode()
    *args, tail = out.split("\0")
    assert args == TRICKY
    assert tail == secret + "rest of stdin"
    assert not Path("/tmp/pwned").exists()


def test_remote_command_timeout_and_cwd() -> None:
    timed = subprocess.run(
        ["sh", "-c", remote_command(["sleep", "5"], cwd=None, timeout_s=0.2)],
        input=b"\n",
        capture_output=True,
    )
    assert timed.returncode == 124
    bad_cwd = subprocess.run(
        ["sh", "-c", remote_command(["true"], cwd="/no/such/dir", timeout_s=None)],
        input=b"\n",
        capture_output=True,
    )
    assert bad_cwd.returncode == 121 and b"cannot cd to /no/such/dir" in bad_cwd.stderr


def test_job_markers() -> None:
    assert check_marker("job-2026.01_a") == "job-2026.01_a"
    for bad in ("", "-x", "a b", "a;b", "x" * 129, "a=b"):
        with pytest.raises(LauncherInputError):
            check_marker(bad)


def test_line_buffer_joins_chunks() -> None:
    lines: list[str] = []
    buffer = LineBuffer(lines.append)
    for chunk in (b"a", b"b\nc\r\n", "é".encode()[:1], "é".encode()[1:], b"\n", b"tail"):
        buffer.feed(chunk)
    assert lines == ["ab", "c", "é"]
    buffer.finish()
    assert lines == ["ab", "c", "é", "tail"]
