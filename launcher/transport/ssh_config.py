"""Where to connect for a node: its host string plus ~/.ssh/config (HostName, User, Port,
IdentityFile), with OpenSSH's precedence (what the host string says wins over the config).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

import paramiko

from launcher.cluster import Node
from launcher.errors import LauncherInputError

SSH_PORT = 22


@dataclass(frozen=True)
class SshTarget:
    """A node resolved to the address, port, user and keys to connect with."""

    node: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[Path, ...]

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH (and paramiko) look up in known_hosts: `[host]:port` off port 22."""
        return self.hostname if self.port == SSH_PORT else f"[{self.hostname}]:{self.port}"


def load_ssh_config(path: Path | None) -> paramiko.SSHConfig | None:
    if path is None or not path.exists():
        return None
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except (OSError, paramiko.ssh_exception.ConfigParseError) as err:
        raise LauncherInputError(f"cannot read ssh config {path}: {err}") from err


def resolve_target(
    node: Node,
    config: paramiko.SSHConfig | None,
    *,
    default_user: str | None = None,
    extra_identity_files: tuple[Path, ...] = (),
) -> SshTarget:
    entry: dict[str, object] = dict(config.lookup(node.host)) if config is not None else {}
    for unsupported in ("proxyjump", "proxycommand"):
        if unsupported in entry:
            raise LauncherInputError(
                f"{node.name}: ssh config sets {unsupported} for this host; tuneboard does not "
                "go through jump hosts yet: give a host it can reach directly"
            )
    hostname = str(entry.get("hostname", node.host))
    port = node.port
    if port is None:
        config_port = str(entry.get("port", SSH_PORT))
        if not config_port.isdigit():
            raise LauncherInputError(
                f"{node.name}: ssh config Port {config_port!r} is not a number"
            )
        port = int(config_port)
    user = node.user or _str_or_none(entry.get("user")) or default_user or getpass.getuser()
    raw_files = entry.get("identityfile", [])
    files = raw_files if isinstance(raw_files, list) else [raw_files]
    own = (Path(os.path.expanduser(node.key)),) if node.key is not None else ()
    configured = tuple(Path(os.path.expanduser(str(f))) for f in files)
    identity = own + extra_identity_files + configured
    return SshTarget(node.name, hostname, port, user, identity)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
