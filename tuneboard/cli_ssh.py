"""The SSH options `tuneboard launch` and `tuneboard dashboard` share, and what they make.

Light to import: typer and launcher.transport (no paramiko until a node is reached).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from launcher.transport import ConnectOptions

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
