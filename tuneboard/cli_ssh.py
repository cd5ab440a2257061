"""The SSH options `tuneboard launch` and `tuneboard dashboard` share, and what they make.

Light to import: typer and launcher.transport.base (no paramiko until a node is reached).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from launcher.transport.base import ConnectOptions

Hostfile = Annotated[
    Path | None,
    typer.Option("--hostfile", help="Nodes, one `\\[user@]host[:port] slots=N` a line."),
]
TrustNewHosts = Annotated[
    bool, typer.Option("--trust-new-hosts", help="Record unknown host keys in known_hosts.")
]
Identity = Annotated[
    list[Path] | None, typer.Option("--identity", "-i", help="SSH private key (repeatable).")
]
KnownHosts = Annotated[
    Path | None,
    typer.Option("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)."),
]
SshConfig = Annotated[
    Path | None, typer.Option("--ssh-config", help="ssh config file (default ~/.ssh/config).")
]


def connect_options(
    known_hosts: Path | None,
    ssh_config: Path | None,
    identity: list[Path] | None,
    trust_new_hosts: bool,
) -> ConnectOptions:
    """ConnectOptions from the flags; ssh's own files where a flag is not given."""
    defaults = ConnectOptions()
    return ConnectOptions(
        known_hosts=known_hosts or defaults.known_hosts,
        ssh_config=ssh_config or defaults.ssh_config,
        identity_files=tuple(identity or ()),
        trust_new_hosts=trust_new_hosts,
    )


def check_ssh_files(options: ConnectOptions) -> None:
    """One clear line, before anything connects, for SSH files that cannot work: a missing
    identity file, a known_hosts that is not a file, an ssh config that does not parse."""
    from launcher.transport.ssh_config import load_ssh_config
    from planner.errors import UserInputError

    for key in options.identity_files:
        if not key.expanduser().is_file():
            raise UserInputError(f"--identity {key}: no such file (an SSH private key)")
    known = options.known_hosts.expanduser()
    if known.exists() and not known.is_file():
        raise UserInputError(f"--known-hosts {known} is not a file")
    load_ssh_config(options.ssh_config)  # raises LauncherInputError, a UserInputError
