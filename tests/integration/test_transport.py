"""The transport and detached jobs against real sshd nodes on loopback (and the local machine).

The "nodes" are sshd processes on this machine, so what a node sees (its processes, its
files) is checked directly in /proc and on disk.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from launcher.cluster import Cluster, Node
from launcher.errors import (
    AuthError,
    CommandTimeout,
    ConnectError,
    HostKeyChangedError,
    HostKeyUnknownError,
    LauncherInputError,
)
from launcher.job import node_process as proc
from launcher.job.log_follower import LogFollower
from launcher.transport.base import ConnectOptions, Transport
from launcher.transport.connect import open_transport
from launcher.transport.fanout import NodePool
from tests.integration.transport_fixtures import (
    SECRET,
    cmdlines,
    node_of,
    options,
    ssh0,
    transport,
    wait_for,
)
from tests.support.sshd import SshdCluster, descendants

pytestmark = pytest.mark.integration
__all__ = ["options", "ssh0", "transport"]  # fixtures, used by name

# -- sshd nodes -----------------------------------------------------------------------------


def test_sshd_nodes_start_fast(sshd_cluster: SshdCluster) -> None:
    per_node_s = sshd_cluster.start_s / len(sshd_cluster.nodes)
    assert per_node_s < 0.5, f"{per_node_s:.3f} s per node"
    assert len({n.host for n in sshd_cluster.nodes}) == len(sshd_cluster.nodes)


# -- commands -------------------------------------------------------------------------------


def test_arguments_are_never_shell_code(transport: Transport, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    tricky = [
        f"out; touch {pwned}",
        f"$(touch {pwned})",
        f"`touch {pwned}`",
        'it\'s "quoted"',
        "two\nlines",
        "*",
        "",
        "--",
        "~",
    ]
    result = transport.run(["printf", r"%s\0", *tricky]).check()
    assert result.stdout.split("\0")[:-1] == tricky
    assert not pwned.exists()


def test_env_reaches_the_command(transport: Transport) -> None:
    env = {"TB_A": "a b'c\"d $HOME `x` \\", "TB_EMPTY": "", "HF_TOKEN": SECRET}
    result = transport.run(
        ["sh", "-c", 'printf "%s|%s|%s" "$TB_A" "$TB_EMPTY" "$HF_TOKEN"'], env=env
    ).check()
    assert result.stdout == f"{env['TB_A']}||{SECRET}"


def test_bad_env_is_refused_without_showing_the_value(transport: Transport) -> None:
    with pytest.raises(LauncherInputError, match="HF_TOKEN") as err:
        transport.run(["true"], env={"HF_TOKEN": "line1\nline2-secret"})
    assert "secret" not in str(err.value)
    with pytest.raises(LauncherInputError, match="not valid"):
        transport.run(["true"], env={"A B": "x"})


def test_stdout_lines_stream_as_they_come(transport: Transport) -> None:
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    result = transport.run(
        ["sh", "-c", "echo one; echo err >&2; sleep 0.6; printf 'two\\nthree'"],
        on_line=lambda line: arrivals.append((time.monotonic() - started, line)),
    )
    assert [line for _, line in arrivals] == ["one", "two", "three"]
    assert arrivals[1][0] - arrivals[0][0] > 0.4, arrivals  # "one" came before the sleep
    assert result.stderr == "err\n"
    assert result.stdout == "one\ntwo\nthree"


def test_a_long_stream_keeps_only_its_tail(transport: Transport) -> None:
    """`output_tail_bytes`: every line still reaches on_line, but what the result holds of
    stdout and stderr stays small (a dashboard agent streams for days)."""
    code = (
        "import sys\n"
        "for i in range(20000):\n"
        "    print(f'out {i}')\n"
        "    print(f'err {i}', file=sys.stderr)\n"
    )
    got: list[str] = []
    result = transport.run([sys.executable, "-c", code], on_line=got.append, output_tail_bytes=1000)
    assert got == [f"out {i}" for i in range(20000)]
    assert len(result.stdout) <= 2000 and result.stdout.endswith("out 19999\n")
    assert len(result.stderr) <= 2000 and result.stderr.endswith("err 19999\n")
    whole = transport.run([sys.executable, "-c", code])  # without it: all of it
    assert whole.stdout.count("\n") == 20000 and whole.stderr.count("\n") == 20000


def test_exit_codes_and_cwd(transport: Transport, tmp_path: Path) -> None:
    assert transport.run(["sh", "-c", "exit 3"]).returncode == 3
    assert transport.run(["pwd"], cwd=str(tmp_path)).stdout.strip() == str(tmp_path)
    missing = transport.run(["pwd"], cwd=str(tmp_path / "nope"))
    assert missing.returncode == 121 and "cannot cd" in missing.stderr
    assert transport.run(["no-such-command-tb"]).returncode == 127
    with pytest.raises(Exception, match="exited with 3"):
        transport.run(["sh", "-c", "echo boom >&2; exit 3"]).check()


def test_timeout_stops_the_command_on_the_node(transport: Transport) -> None:
    tag = f"{time.time_ns() % 10**6}.5"  # a sleep duration no other process uses
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"did not finish within 0\.5 s"):
        transport.run(["sleep", tag], timeout_s=0.5)
    assert time.monotonic() - started < 4
    wait_for(lambda: not any(b"sleep\0" + tag.encode() in c for c in cmdlines()), 5)


def test_death_by_signal_is_128_plus_n(transport: Transport) -> None:
    assert transport.run(["sh", "-c", "kill -KILL $$"]).returncode == 128 + 9


# -- SSH connection -------------------------------------------------------------------------


def test_one_connection_is_reused(ssh0: Transport) -> None:
    first = ssh0.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout.split()
    second = ssh0.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout.split()
    assert first[1] == second[1]  # same client port: same TCP connection


def test_all_nodes_in_parallel(sshd_cluster: SshdCluster, options: ConnectOptions) -> None:
    cluster = Cluster.from_hosts([n.host for n in sshd_cluster.nodes])
    started = time.monotonic()
    with NodePool(cluster, options) as pool:
        connect_s = time.monotonic() - started
        assert pool.failures == ()
        started = time.monotonic()
        results = pool.map(lambda t: t.run(["sh", "-c", "sleep 1; echo $SSH_CONNECTION"]))
        run_s = time.monotonic() - started
    servers = [r.value.stdout.split()[2] for r in results if r.value is not None]
    assert servers == [n.address for n in sshd_cluster.nodes]
    assert run_s < 2.5, f"3 × 1 s commands took {run_s:.2f} s: not parallel"
    assert connect_s < 3


def test_a_stuck_node_times_out(sshd_cluster: SshdCluster, options: ConnectOptions) -> None:
    """sshd frozen mid-command (SIGSTOP): the client gives up at timeout + its grace."""
    sshd = sshd_cluster.nodes[2]
    transport = open_transport(node_of(sshd), options)
    frozen: list[int] = []

    def freeze() -> None:
        for pid in descendants(sshd.pid):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue  # a short-lived child that has already gone
            if name == "sshd":
                os.kill(pid, signal.SIGSTOP)
                frozen.append(pid)

    timer = threading.Timer(0.2, freeze)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(CommandTimeout):
            transport.run(["sleep", "10"], timeout_s=0.5)
        assert time.monotonic() - started < 6
    finally:
        timer.join()
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        transport.close()
    assert frozen


def test_node_errors_are_per_node_results(
    sshd_cluster: SshdCluster, options: ConnectOptions
) -> None:
    hosts = [sshd_cluster.nodes[0].host, "127.0.0.9:1"]
    with NodePool(Cluster.from_hosts(hosts), options) as pool:
        assert list(pool.transports) == [sshd_cluster.nodes[0].host]
        [failure] = pool.failures
        assert failure.node.name == "127.0.0.9:1"
        assert isinstance(failure.error, ConnectError)
        assert "connection refused" in str(failure.error)


def test_closed_port_and_wrong_key_are_clear(
    sshd_cluster: SshdCluster, options: ConnectOptions, tmp_path: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectError, match=r"127\.0\.0\.9:1: connection refused"):
        open_transport(Cluster.from_hosts(["127.0.0.9:1"]).nodes[0], options)
    assert time.monotonic() - started < options.connect_timeout_s
    other_key = tmp_path / "other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    with pytest.raises(AuthError, match="refused us") as err:
        open_transport(
            node_of(sshd_cluster.nodes[0]), replace(options, identity_files=(other_key,))
        )
    assert str(other_key) in str(err.value)


def test_ssh_config_is_honoured(
    sshd_cluster: SshdCluster, options: ConnectOptions, tmp_path: Path
) -> None:
    node = sshd_cluster.nodes[1]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host trainer-b\n  HostName {node.address}\n  Port {node.port}\n"
        f"  User root\n  IdentityFile {sshd_cluster.client_key}\n"
    )
    opts = replace(options, ssh_config=config, identity_files=(), user=None)
    transport = open_transport(Cluster.from_hosts(["trainer-b"]).nodes[0], opts)
    try:
        assert transport.node.name == "trainer-b"
        result = transport.run(["sh", "-c", "echo $USER $SSH_CONNECTION"]).check()
        assert result.stdout.split()[0] == "root"
        assert result.stdout.split()[3] == node.address
    finally:
        transport.close()


def test_a_nodes_own_key_is_used(sshd_cluster: SshdCluster, options: ConnectOptions) -> None:
    sshd = sshd_cluster.nodes[0]
    node = Node(sshd.address, port=sshd.port, key=sshd_cluster.client_key, label="n0")
    transport = open_transport(node, replace(options, identity_files=()))
    try:
        assert transport.run(["true"]).ok
    finally:
        transport.close()
    with pytest.raises(LauncherInputError, match="n0: identity file not found"):
        open_transport(replace(node, key=Path("/no/such/key")), options)


def test_agent_authentication(
    sshd_cluster: SshdCluster,
    options: ConnectOptions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, 5)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        subprocess.run(
            ["ssh-add", "-q", str(sshd_cluster.client_key)], check=True, capture_output=True
        )
        opts = replace(options, identity_files=(), use_agent=True)
        with pytest.raises(AuthError, match="no key at all"):  # the agent is the only way in
            open_transport(node_of(sshd_cluster.nodes[0]), replace(opts, use_agent=False))
        transport = open_transport(node_of(sshd_cluster.nodes[0]), opts)
        assert transport.run(["true"]).ok
        transport.close()
    finally:
        agent.terminate()
        agent.wait()


# -- host keys ------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_its_fingerprint(
    sshd_cluster: SshdCluster, options: ConnectOptions, tmp_path: Path
) -> None:
    node = sshd_cluster.nodes[0]
    empty = tmp_path / "known_hosts"
    with pytest.raises(HostKeyUnknownError) as err:
        open_transport(node_of(node), replace(options, known_hosts=empty))
    assert err.value.fingerprint == node.fingerprint()  # as ssh-keygen -lf prints it
    assert node.fingerprint() in str(err.value)
    assert "--trust-new-hosts" in str(err.value)
    assert not empty.exists()


def test_trust_new_hosts_records_the_key(
    sshd_cluster: SshdCluster, options: ConnectOptions, tmp_path: Path
) -> None:
    node = sshd_cluster.nodes[2]
    known = tmp_path / "ssh" / "known_hosts"
    open_transport(node_of(node), replace(options, known_hosts=known, trust_new_hosts=True)).close()
    assert known.read_text() == node.known_hosts_line()
    assert known.stat().st_mode & 0o777 == 0o600
    found = subprocess.run(
        ["ssh-keygen", "-F", node.known_hosts_name, "-f", str(known)], capture_output=True
    )
    assert found.returncode == 0  # OpenSSH itself reads the line we wrote
    open_transport(node_of(node), replace(options, known_hosts=known)).close()  # now known


def test_changed_host_key_is_always_refused(
    sshd_cluster: SshdCluster, options: ConnectOptions, tmp_path: Path
) -> None:
    node, impostor = sshd_cluster.nodes[0], sshd_cluster.nodes[1]
    known = tmp_path / "known_hosts"
    wrong_key = impostor.known_hosts_line().split(" ", 1)[1]
    known.write_text(f"{node.known_hosts_name} {wrong_key}")
    for trust in (False, True):
        with pytest.raises(HostKeyChangedError, match="HOST KEY CHANGED") as err:
            open_transport(
                node_of(node), replace(options, known_hosts=known, trust_new_hosts=trust)
            )
        assert node.fingerprint() in str(err.value)
        assert impostor.fingerprint() in str(err.value)
    assert known.read_text() == f"{node.known_hosts_name} {wrong_key}"


# -- files ----------------------------------------------------------------------------------


def test_upload_skips_unchanged_files(transport: Transport, tmp_path: Path) -> None:
    local = tmp_path / "recipe.yaml"
    local.write_text("lr: 1e-4\n")
    local.chmod(0o640)
    os.utime(local, (1_700_000_000, 1_700_000_000))
    remote = str(tmp_path / "node" / "work" / "recipe.yaml")
    assert transport.upload(local, remote) is True
    assert Path(remote).read_text() == "lr: 1e-4\n"
    assert Path(remote).stat().st_mode & 0o777 == 0o640
    assert int(Path(remote).stat().st_mtime) == 1_700_000_000
    assert transport.upload(local, remote) is False
    assert transport.upload(local, remote, compare="sha256") is False

    local.write_text("lr: 2e-4\n")  # same size, same mtime: only a hash can tell
    os.utime(local, (1_700_000_000, 1_700_000_000))
    assert transport.upload(local, remote, compare="sha256") is True
    assert Path(remote).read_text() == "lr: 2e-4\n"

    local.write_text("lr: 3e-4\n")  # an edit moves the mtime: the quick check sees it
    assert transport.upload(local, remote) is True
    assert Path(remote).read_text() == "lr: 3e-4\n"
    assert not list(Path(remote).parent.glob("*partial*"))


def test_home_relative_paths(
    transport: Transport, job_marker: Callable[[], str], tmp_path: Path
) -> None:
    """`~/x` and `x` are the login directory's (sftp and quoted shell args do not expand ~)."""
    name = f".tuneboard-test-{job_marker()}"
    home_dir = Path.home() / name
    try:
        local = tmp_path / "f.txt"
        local.write_text("hi\n")
        assert transport.upload(local, f"~/{name}/f.txt")
        assert (home_dir / "f.txt").read_text() == "hi\n"
        assert transport.read_from(f"{name}/f.txt", 0) == b"hi\n"
        assert transport.run(["pwd"], cwd=f"~/{name}").stdout.strip() == str(home_dir)
        job = proc.start_detached(
            transport,
            ["sh", "-c", "pwd"],
            marker=job_marker(),
            pid_path=f"~/{name}/job.pid",
            log_path=f"~/{name}/job.log",
            cwd=str(tmp_path),
        )
        wait_for(lambda: proc.job_state(transport, job).exit_code == 0)
        assert (home_dir / "job.log").read_text() == f"{tmp_path}\n"
        with pytest.raises(LauncherInputError, match="~user is not read"):
            transport.read_from("~root/x", 0)
    finally:
        shutil.rmtree(home_dir, ignore_errors=True)


def test_log_follower_reads_by_offset(transport: Transport, tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    follower = LogFollower(transport, str(log))
    assert follower.poll() == []  # not created yet
    log.write_bytes(b"a\nb")
    assert follower.poll() == ["a"]
    with log.open("ab") as f:
        f.write("é\nc\n".encode())
    assert follower.poll() == ["bé", "c"]
    resumed = LogFollower(transport, str(log), offset=2)
    assert resumed.finish() == ["bé", "c"]
