"""The nodes a job runs on: from a DeepSpeed-style hostfile, a list of hosts, or none (local).

A hostfile has one node per line, as DeepSpeed and its launcher read it:

    # comment
    node1 slots=8
    deploy@node2:2222 slots=8   # user and port are optional
    10.0.0.7

A host is `[user@]host[:port]` (IPv6 in brackets: `[fe80::1]:22`). `host` may be an
alias from ~/.ssh/config; HostName, User, Port and IdentityFile are applied when the
transport connects (launcher/transport/ssh_config.py). A user or port written here wins over
the config, as on the ssh command line. `slots` is the number of GPUs (processes) on
the node; without it, the recipe or the detected GPUs decide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import LauncherInputError

_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_FORMAT_HINT = "a hostfile line is `[user@]host[:port] [slots=N]`, e.g. `node1 slots=8`"


@dataclass(frozen=True)
class Node:
    """One machine of the cluster, as the user wrote it (ssh_config is applied at connect)."""

    host: str
    port: int | None = None
    user: str | None = None
    slots: int | None = None
    #: Private key for this node only, tried before any other (a recipe's `key:`).
    key: Path | None = None
    #: Label in logs and tables instead of host[:port] (a recipe's `name:`).
    label: str | None = None
    local: bool = False

    @property
    def name(self) -> str:
        """Label used in logs (`name/rank`) and tables; unique within a cluster."""
        if self.label:
            return self.label
        host = f"[{self.host}]" if ":" in self.host and self.port is not None else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True)
class Cluster:
    """The nodes of a job; the first node is the master (rank-0 node, rendezvous host)."""

    nodes: tuple[Node, ...]
    source: str

    def __post_init__(self) -> None:
        if not self.nodes:
            raise LauncherInputError(f"{self.source}: no nodes")
        names = [node.name for node in self.nodes]
        dupes = sorted({name for name in names if names.count(name) > 1})
        if dupes:
            raise LauncherInputError(f"{self.source}: node names must be unique: {dupes}")

    @property
    def master(self) -> Node:
        return self.nodes[0]

    @property
    def is_local(self) -> bool:
        return len(self.nodes) == 1 and self.nodes[0].local

    @classmethod
    def local(cls, slots: int | None = None) -> Cluster:
        """No cluster given: the local machine, reached without SSH."""
        return cls((Node(host="localhost", slots=slots, local=True),), "local machine")

    @classmethod
    def from_hosts(cls, hosts: Sequence[str], source: str = "hosts") -> Cluster:
        """A list of hosts, each written as a hostfile line (`node1`, `node2:2222 slots=8`)."""
        return _build(
            ((f"{source}[{i}]", text) for i, text in enumerate(hosts)), source, skip_blank=False
        )

    @classmethod
    def from_hostfile(cls, path: Path) -> Cluster:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise LauncherInputError(f"cannot read hostfile {path}: {err.strerror or err}") from err
        return parse_hostfile(text, str(path))


def parse_hostfile(text: str, source: str) -> Cluster:
    """Parse hostfile text; errors name `source:line` and the line."""
    lines = ((f"{source}:{n}", line) for n, line in enumerate(text.splitlines(), start=1))
    return _build(lines, f"hostfile {source}", skip_blank=True)


def _build(entries: Iterable[tuple[str, str]], source: str, *, skip_blank: bool) -> Cluster:
    nodes: list[Node] = []
    seen: dict[str, str] = {}
    for where, raw in entries:
        content = raw.split("#", 1)[0].strip()
        if not content:
            if skip_blank:
                continue
            raise LauncherInputError(f"{where}: empty host; write e.g. `node1` or `node1 slots=8`")
        node = parse_node_line(content, where)
        if node.name in seen:
            raise LauncherInputError(
                f"{where}: {content!r}: node {node.name} is already listed at {seen[node.name]}"
            )
        seen[node.name] = where
        nodes.append(node)
    if not nodes:
        raise LauncherInputError(f"{source}: no hosts; {_FORMAT_HINT}")
    return Cluster(tuple(nodes), source)


def parse_node_line(line: str, where: str) -> Node:
    """`[user@]host[:port] [slots=N]` -> Node. `where` prefixes every error message."""
    tokens = line.split()
    if not tokens:
        raise LauncherInputError(f"{where}: empty line; {_FORMAT_HINT}")
    user, host, port = parse_host(tokens[0], where=f"{where}: {line!r}")
    slots: int | None = None
    for token in tokens[1:]:
        name, eq, value = token.partition("=")
        if name != "slots" or not eq:
            raise LauncherInputError(f"{where}: {line!r}: unexpected {token!r}; {_FORMAT_HINT}")
        if slots is not None:
            raise LauncherInputError(f"{where}: {line!r}: slots given twice")
        if not value.isdigit() or int(value) < 1:
            raise LauncherInputError(
                f"{where}: {line!r}: slots must be a whole number ≥ 1, got {value!r}"
            )
        slots = int(value)
    return Node(host=host, port=port, user=user, slots=slots)


def parse_host(text: str, *, where: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` -> (user, host, port); IPv6 as `[addr]` or `[addr]:port`."""
    user: str | None = None
    rest = text
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not _USER.fullmatch(user):
            raise LauncherInputError(
                f"{where}: {user!r} is not a user name (letters, digits, '.', '_', '-')"
            )
    port_text: str | None = None
    if rest.startswith("["):
        addr, bracket, after = rest[1:].partition("]")
        if not bracket or not _IPV6.fullmatch(addr) or (after and not after.startswith(":")):
            raise LauncherInputError(f"{where}: {rest!r} is not `[ipv6-address]` or `[addr]:port`")
        host = addr
        port_text = after[1:] if after else None
    elif rest.count(":") > 1:
        if not _IPV6.fullmatch(rest):
            raise LauncherInputError(f"{where}: {rest!r} is not an IPv6 address")
        host = rest
    else:
        host, colon, after = rest.partition(":")
        port_text = after if colon else None
        if not _HOSTNAME.fullmatch(host):
            raise LauncherInputError(
                f"{where}: {host!r} is not a host name or address "
                "(letters, digits, '.', '_', '-'; not starting with '-')"
            )
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise LauncherInputError(f"{where}: port must be 1-65535, got {port_text!r}")
        port = int(port_text)
    return user, host, port
