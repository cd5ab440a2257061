"""One interface to a node: run a command, copy a file in, read a file out.

`SshTransport` (launcher/transport/ssh.py) reaches a node over one paramiko connection;
`LocalTransport` (launcher/transport/local.py) is the local machine when no cluster is
given. Everything above this layer (detached jobs in launcher/job/node_process.py, log tailing,
preflight, launch) is written against `Transport` only, so the local path and the SSH
path run the same code.

Paths on a node are absolute, or relative to the login directory (the home directory
for the local transport), as for ssh and sftp; `~` and `~/...` mean the same (sftp and a
quoted shell argument would not expand them, so the transports do, via `node_path`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from launcher.cluster import Node
from launcher.errors import CommandError, LauncherInputError
from launcher.transport.remote_shell import describe

#: Default timeout of one command; long-running work is started detached
#: (launcher/job/node_process.py).
DEFAULT_TIMEOUT_S = 120.0
#: How `upload` decides a file is unchanged: rsync's quick check (size and mtime, to the
#: second, since SFTP v3 carries whole seconds), or the SHA-256 of both copies.
CompareMode = Literal["mtime", "sha256"]
LineCallback = Callable[[str], None]


def keep_tail(buffer: bytearray, limit: int | None) -> None:
    """Trim buffer to its last `limit` bytes once it holds twice that (amortised O(1))."""
    if limit is not None and len(buffer) > 2 * limit:
        del buffer[:-limit]


@dataclass(frozen=True)
class CommandResult:
    node: str
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> CommandResult:
        """Self if the command succeeded, else CommandError with the end of its stderr."""
        if self.returncode != 0:
            tail = " | ".join(self.stderr.strip().splitlines()[-3:])
            raise CommandError(self.node, describe(self.argv), self.returncode, tail)
        return self


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach nodes over SSH. The defaults are ssh's own files."""

    known_hosts: Path = field(default_factory=lambda: Path.home() / ".ssh" / "known_hosts")
    #: Read as well (never written); None to ignore.
    system_known_hosts: Path | None = Path("/etc/ssh/ssh_known_hosts")
    #: Record unknown host keys in `known_hosts` instead of refusing them.
    #: A *changed* key is refused whatever this says.
    trust_new_hosts: bool = False
    ssh_config: Path | None = field(default_factory=lambda: Path.home() / ".ssh" / "config")
    #: Login user when neither the host string nor ssh_config names one (None: local user).
    user: str | None = None
    #: Tried before ssh_config's IdentityFile entries.
    identity_files: tuple[Path, ...] = ()
    use_agent: bool = True
    #: Also try ~/.ssh/id_* (as ssh does).
    look_for_keys: bool = True
    connect_timeout_s: float = 10.0
    #: SSH keepalive interval; a dead node is noticed within a few intervals.
    keepalive_s: int = 15
    #: Channels open at once on one connection (sshd's MaxSessions defaults to 10).
    max_sessions: int = 8
    #: A file read or write that gets no answer this long fails (a node whose kernel still
    #: ACKs but whose sshd is stuck never trips TCP's timeouts: only this notices it).
    sftp_timeout_s: float = 60.0


class Transport(Protocol):
    """A connection to one node. Thread-safe: many commands may run at once."""

    @property
    def node(self) -> Node: ...

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
        """Run argv (never a shell string) and wait for it.

        `env` is added to the node's login environment without appearing on any
        command line (see launcher/transport/remote_shell.py). `on_line` gets each stdout line as it
        arrives (without its newline); stdout and stderr are also returned whole, or
        only about their last `output_tail_bytes` each (a long-running stream read through
        `on_line` must not pile up in memory). Past `timeout_s` the command is stopped and
        CommandTimeout raised.
        """
        ...

    def upload(self, local: Path, remote: str, *, compare: CompareMode = "mtime") -> bool:
        """Copy a file to the node (parents created, mode and mtime kept, atomic rename).

        Returns False, copying nothing, when the node's copy is unchanged.
        """
        ...

    def read_from(self, path: str, offset: int, max_bytes: int = 1 << 20) -> bytes:
        """Up to max_bytes of a node's file from offset; b"" if it does not exist (yet)."""
        ...

    def is_connected(self) -> bool: ...

    def close(self) -> None: ...


def node_path(path: str) -> str:
    """`~` -> ".", `~/x` -> "x" (relative paths are relative to the login directory)."""
    if path == "~" or path == "~/":
        return "."
    if path.startswith("~/"):
        return path[2:]
    if path.startswith("~"):
        raise LauncherInputError(
            f"{path!r}: write the path as ~/... or in full (~user is not read)"
        )
    return path
