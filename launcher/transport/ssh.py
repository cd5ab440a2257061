"""A node over SSH: one paramiko connection per node, reused for every command and file.

Connect: ~/.ssh/config applied (launcher/transport/ssh_config.py), host key checked strictly
(launcher/transport/host_keys.py), key files and the agent offered, keepalive on. Commands run
on their own channels of that connection, at most `max_sessions` at once (sshd's
MaxSessions defaults to 10); files go over one SFTP session, serialised by a lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import posixpath
import select
import socket
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import paramiko

from launcher.cluster import Node
from launcher.errors import (
    AuthError,
    CommandTimeout,
    ConnectError,
    HostKeyChangedError,
    HostKeyUnknownError,
    LauncherInputError,
    TransportError,
)
from launcher.transport.base import (
    DEFAULT_TIMEOUT_S,
    CommandResult,
    CompareMode,
    ConnectOptions,
    LineCallback,
    keep_tail,
    node_path,
)
from launcher.transport.host_keys import StrictHostKeyPolicy, describe_key, load_known_hosts
from launcher.transport.line_buffer import LineBuffer
from launcher.transport.remote_shell import (
    EXIT_TIMEOUT,
    check_argv,
    describe,
    env_line,
    remote_command,
)
from launcher.transport.ssh_config import SshTarget, load_ssh_config, resolve_target

# paramiko logs every failed connection attempt at ERROR; with no handler configured Python
# prints those to stderr. The transport reports each failure itself, once, as one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: The node's `timeout` stops a command at timeout_s (KILL 2 s later); this client
#: gives up on the channel a little after that, in case the node itself is stuck.
_CLIENT_GRACE_S = 3.0
_POLL_S = 0.05


class SshTransport:
    def __init__(
        self, node: Node, target: SshTarget, client: paramiko.SSHClient, options: ConnectOptions
    ) -> None:
        self._node = node
        self._target = target
        self._client = client
        self._options = options
        self._sessions = threading.BoundedSemaphore(options.max_sessions)
        self._sftp_lock = threading.Lock()
        self._sftp: paramiko.SFTPClient | None = None

    @classmethod
    def connect(cls, node: Node, options: ConnectOptions) -> SshTransport:
        given = (*((node.key.expanduser(),) if node.key else ()), *options.identity_files)
        missing = [str(p) for p in given if not p.is_file()]
        if missing:
            raise LauncherInputError(f"{node.name}: identity file not found: {', '.join(missing)}")
        target = resolve_target(
            node,
            load_ssh_config(options.ssh_config),
            default_user=options.user,
            extra_identity_files=options.identity_files,
        )
        client = paramiko.SSHClient()
        load_known_hosts(client, options.known_hosts, options.system_known_hosts)
        client.set_missing_host_key_policy(
            StrictHostKeyPolicy(
                node.name, options.known_hosts, trust_new_hosts=options.trust_new_hosts
            )
        )
        try:
            _connect(client, target, options)
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is None:  # connect() returned, so this does not happen
            raise ConnectError(node.name, "connection closed right after login")
        transport.set_keepalive(options.keepalive_s)
        _limit_unacknowledged(
            transport.sock, max(3 * options.keepalive_s, options.connect_timeout_s)
        )
        return cls(node, target, client, options)

    @property
    def node(self) -> Node:
        return self._node

    @property
    def target(self) -> SshTarget:
        return self._target

    def is_connected(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        with self._sftp_lock:
            if self._sftp is not None:
                self._sftp.close()
                self._sftp = None
        self._client.close()

    # -- commands ---------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes = b"",
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        on_line: LineCallback | None = None,
        output_tail_bytes: int | None = None,
    ) -> CommandResult:
        args = check_argv(argv)
        command = remote_command(args, cwd=node_path(cwd) if cwd else None, timeout_s=timeout_s)
        payload = env_line(env) + stdin
        started = time.monotonic()
        lines = LineBuffer(on_line) if on_line is not None else None
        with self._sessions:
            channel = self._open_channel()
            # The node's `timeout` stops the command; this watchdog covers a node that is
            # itself stuck (paramiko's exec_command waits for the node with no timeout).
            expired = threading.Event()
            watchdog = None
            if timeout_s is not None:
                watchdog = threading.Timer(
                    timeout_s + _CLIENT_GRACE_S, _expire, args=(channel, expired)
                )
                watchdog.daemon = True
                watchdog.start()
            try:
                channel.exec_command(command)
                # A command may exit without reading its stdin: not an error.
                with contextlib.suppress(OSError):
                    channel.sendall(payload)
                    channel.shutdown_write()
                stdout, stderr = _collect(channel, lines, output_tail_bytes)
                returncode = channel.recv_exit_status()
            except (paramiko.SSHException, OSError) as err:
                if expired.is_set():
                    raise CommandTimeout(
                        self._node.name, describe(args), timeout_s or 0, ""
                    ) from None
                raise TransportError(
                    f"{self._node.name}: `{describe(args)}` failed: {err}"
                ) from err
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                channel.close()
        if lines is not None:
            lines.finish()
        duration_s = time.monotonic() - started
        out = stdout.decode("utf-8", errors="replace")
        if timeout_s is not None and (
            expired.is_set() or _stopped_by_timeout(returncode, duration_s, timeout_s)
        ):
            raise CommandTimeout(self._node.name, describe(args), timeout_s, out[-2000:])
        if returncode < 0:  # paramiko's "no exit status": the channel closed without one
            raise TransportError(
                f"{self._node.name}: `{describe(args)}` ended without an exit status "
                "(connection lost?)"
            )
        return CommandResult(
            self._node.name,
            args,
            returncode,
            out,
            stderr.decode("utf-8", errors="replace"),
            duration_s,
        )

    def _open_channel(self) -> paramiko.Channel:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise TransportError(f"{self._node.name}: connection lost")
        try:
            return transport.open_session(timeout=self._options.connect_timeout_s)
        except (paramiko.SSHException, OSError) as err:
            raise TransportError(f"{self._node.name}: cannot open a channel: {err}") from err

    # -- files ------------------------------------------------------------------------

    def upload(self, local: Path, remote: str, *, compare: CompareMode = "mtime") -> bool:
        remote = node_path(remote)
        st = local.stat()
        if not stat.S_ISREG(st.st_mode):
            raise LauncherInputError(f"{local} is not a regular file")
        if compare == "sha256" and self._same_sha256(local, remote):
            return False
        try:
            with self._sftp_lock:
                sftp = self._sftp_client()
                if compare == "mtime" and _same_size_mtime(sftp, remote, st.st_size, st.st_mtime):
                    return False
                _makedirs(sftp, posixpath.dirname(remote))
                tmp = f"{remote}.tuneboard-partial"
                sftp.put(str(local), tmp, confirm=True)
                sftp.chmod(tmp, stat.S_IMODE(st.st_mode))
                sftp.utime(tmp, (int(st.st_atime), int(st.st_mtime)))
                sftp.posix_rename(tmp, remote)
        except (OSError, paramiko.SSHException) as err:
            raise TransportError(
                f"{self._node.name}: cannot upload {local} to {remote}: {err}"
            ) from err
        return True

    def _same_sha256(self, local: Path, remote: str) -> bool:
        result = self.run(["sha256sum", "--", remote], timeout_s=300)
        if not result.ok:
            return False
        return result.stdout.split(" ", 1)[0] == hashlib.sha256(local.read_bytes()).hexdigest()

    def read_from(self, path: str, offset: int, max_bytes: int = 1 << 20) -> bytes:
        path = node_path(path)
        try:
            with self._sftp_lock:
                sftp = self._sftp_client()
                try:
                    handle = sftp.open(path, "rb")
                except FileNotFoundError:
                    return b""
                with handle:
                    handle.seek(offset)
                    return handle.read(max_bytes)
        except (OSError, paramiko.SSHException) as err:
            raise TransportError(f"{self._node.name}: cannot read {path}: {err}") from err

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self._client.open_sftp()
            self._sftp.get_channel().settimeout(self._options.sftp_timeout_s)  # type: ignore[union-attr]
        return self._sftp


def _limit_unacknowledged(sock: object, seconds: float) -> None:
    """Drop the connection when sent data (keepalives included) goes unacknowledged this long.

    Without it a node that vanished (power, network) is noticed only after TCP's own
    retransmission timeout, ~15 minutes; with keepalives every `keepalive_s` and this,
    the transport dies within ~3 keepalive intervals and every command on it fails.
    """
    if isinstance(sock, socket.socket) and hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))


def _expire(channel: paramiko.Channel, expired: threading.Event) -> None:
    expired.set()
    channel.close()


def _collect(
    channel: paramiko.Channel, lines: LineBuffer | None, tail_bytes: int | None
) -> tuple[bytes, bytes]:
    """stdout and stderr until EOF and exit status (sshd may send the status first),
    or until the channel closes (connection lost, or the watchdog expired)."""
    out = bytearray()
    err = bytearray()
    while True:
        while channel.recv_ready():
            data = channel.recv(65536)
            out += data
            keep_tail(out, tail_bytes)
            if lines is not None:
                lines.feed(data)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
            keep_tail(err, tail_bytes)
        finished = channel.exit_status_ready() and (channel.eof_received or channel.closed)
        if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
            return bytes(out), bytes(err)
        if channel.eof_received or channel.closed:  # no more data: wait for the status
            channel.status_event.wait(_POLL_S)
        else:
            select.select([channel], [], [], _POLL_S)


def _connect(client: paramiko.SSHClient, target: SshTarget, options: ConnectOptions) -> None:
    node = target.node
    where = f"{target.user}@{target.hostname}:{target.port}"
    timeout = options.connect_timeout_s
    keys = [str(p) for p in target.identity_files if p.is_file()]
    try:
        client.connect(
            target.hostname,
            port=target.port,
            username=target.user,
            # paramiko takes a list too (its stubs say str only)
            key_filename=cast("str | None", keys or None),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            allow_agent=options.use_agent,
            look_for_keys=options.look_for_keys,
        )
    except HostKeyUnknownError:
        raise
    except paramiko.BadHostKeyException as err:
        raise HostKeyChangedError(
            node,
            target.known_hosts_name,
            offered=describe_key(err.key),
            recorded=describe_key(err.expected_key),
            known_hosts=str(options.known_hosts),
        ) from None
    except paramiko.AuthenticationException as err:
        raise AuthError(
            node, f"{where} refused us: {err} (offered: {_offers(keys, options)})"
        ) from None
    except paramiko.ssh_exception.NoValidConnectionsError:
        raise ConnectError(
            node,
            f"connection refused by {target.hostname}:{target.port} (is sshd listening there?)",
        ) from None
    except TimeoutError:  # socket.timeout is TimeoutError
        raise ConnectError(
            node, f"no answer from {target.hostname}:{target.port} within {timeout:g} s"
        ) from None
    except socket.gaierror as err:
        raise ConnectError(node, f"cannot resolve {target.hostname!r}: {err.strerror}") from None
    except paramiko.SSHException as err:
        if "authentication" in str(err).lower():
            raise AuthError(node, f"{where}: {err} (offered: {_offers(keys, options)})") from None
        raise ConnectError(node, f"SSH to {where} failed: {err}") from None
    except OSError as err:
        raise ConnectError(node, f"cannot connect to {where}: {err.strerror or err}") from None


def _stopped_by_timeout(returncode: int, duration_s: float, timeout_s: float) -> bool:
    """coreutils `timeout` exits 124 after its TERM, 137 when it had to KILL."""
    return returncode in (EXIT_TIMEOUT, 128 + 9) and duration_s >= timeout_s


def _offers(keys: list[str], options: ConnectOptions) -> str:
    offered = [*keys]
    if options.use_agent:
        offered.append("ssh-agent")
    if options.look_for_keys:
        offered.append("~/.ssh/id_*")
    return ", ".join(offered) or "no key at all: give one with IdentityFile or the agent"


def _same_size_mtime(sftp: paramiko.SFTPClient, remote: str, size: int, mtime: float) -> bool:
    try:
        attrs = sftp.stat(remote)
    except FileNotFoundError:
        return False
    return attrs.st_size == size and attrs.st_mtime == int(mtime)


def _makedirs(sftp: paramiko.SFTPClient, directory: str) -> None:
    if directory in ("", "/", "."):
        return
    try:
        attrs = sftp.stat(directory)
    except FileNotFoundError:
        _makedirs(sftp, posixpath.dirname(directory))
        try:
            sftp.mkdir(directory)
        except OSError:
            # Another writer (a second node on the same shared filesystem) may have made it
            # in the meantime: only a folder that is still missing is an error.
            if not stat.S_ISDIR(sftp.stat(directory).st_mode or 0):
                raise
        return
    if not stat.S_ISDIR(attrs.st_mode or 0):
        raise TransportError(f"cannot create folder {directory}: a file is in the way")
