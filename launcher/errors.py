"""The exceptions the launcher raises. Every message is meant for the user.

Messages name the node, the value at fault and what to do about it. They never
contain an environment value: secrets travel in the environment (see
launcher/transport/remote_shell.py), so an error that printed one would leak it.
"""

from __future__ import annotations

from planner.errors import UserInputError


class LauncherError(Exception):
    """A launcher failure the CLI prints as one clean line (no traceback)."""


class LauncherInputError(LauncherError, UserInputError):
    """Bad user input: a hostfile line, a host string, an environment name."""


class ConnectError(LauncherError):
    """A node could not be reached or would not let us in."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"{node}: {reason}")
        self.node = node
        self.reason = reason


class HostKeyUnknownError(ConnectError):
    """The node's host key is not in known_hosts (and --trust-new-hosts was not given)."""

    def __init__(self, node: str, known_hosts_name: str, key_type: str, fingerprint: str) -> None:
        super().__init__(
            node,
            f"host key of {known_hosts_name} is not known ({key_type} {fingerprint}). "
            "Compare it with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the node, "
            "then rerun with --trust-new-hosts to record it in known_hosts",
        )
        self.known_hosts_name = known_hosts_name
        self.key_type = key_type
        self.fingerprint = fingerprint


class HostKeyChangedError(ConnectError):
    """The node offered a key different from the one recorded. Never trusted automatically."""

    def __init__(
        self,
        node: str,
        known_hosts_name: str,
        offered: str,
        recorded: str,
        known_hosts: str,
    ) -> None:
        super().__init__(
            node,
            f"HOST KEY CHANGED for {known_hosts_name}: known_hosts records {recorded}, the "
            f"node offered {offered}. Someone may be intercepting the connection, or the "
            "node was reinstalled. Refused (--trust-new-hosts never overrides this). If you "
            f"know why it changed: ssh-keygen -R '{known_hosts_name}' -f {known_hosts}",
        )
        self.known_hosts_name = known_hosts_name
        self.offered = offered
        self.recorded = recorded


class AuthError(ConnectError):
    """The node refused every key we offered."""


class TransportError(LauncherError):
    """A connected node failed mid-operation (connection lost, SFTP error)."""


class CommandTimeout(LauncherError):
    """A command did not finish within its timeout; it was stopped."""

    def __init__(self, node: str, command: str, timeout_s: float, stdout_tail: str) -> None:
        super().__init__(f"{node}: `{command}` did not finish within {timeout_s:g} s (stopped)")
        self.node = node
        self.command = command
        self.timeout_s = timeout_s
        self.stdout_tail = stdout_tail


class CommandError(LauncherError):
    """A command exited non-zero where success was required."""

    def __init__(self, node: str, command: str, returncode: int, stderr_tail: str) -> None:
        detail = f": {stderr_tail}" if stderr_tail else ""
        super().__init__(f"{node}: `{command}` exited with {returncode}{detail}")
        self.node = node
        self.command = command
        self.returncode = returncode
        self.stderr_tail = stderr_tail
