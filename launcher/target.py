"""Where a job runs: the recipe's `cluster:` section (or `--hostfile`), plus the launch flags.

Precedence, most specific first:
- nodes: `--hostfile` > the recipe's `cluster.nodes` > the local machine (no SSH; the job
  runs in the current directory, with this python, and nothing is copied); with
  `--hostfile` the recipe's `cluster:` may leave `nodes` out, and its python/venv, workdir,
  env and shared_fs apply to the hostfile's nodes;
- processes per node: `--nproc-per-node` > hostfile `slots=` > `cluster.gpus_per_node`
  when the recipe writes it > the GPUs preflight finds (1 on a `--cpu` run);
- master address: `--master-addr` > `MASTER_ADDR` in `cluster.env` > the master node's
  address as SSH reaches it (after ~/.ssh/config); port: `--master-port` >
  `cluster.master_port`.

`cluster.workdir` may hold `{node_rank}`: each node then gets its own folder, which is how
several "nodes" share one machine (the loopback test cluster, or GPUs split on one host).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.cluster import Cluster, Node
from launcher.errors import LauncherInputError
from recipes.schema import ClusterSection, NodeSection, Recipe

#: Taken from the launcher's environment when set, sent to every node through the
#: transport's environment mechanism (launcher/transport/remote_shell.py), shown by name only.
SECRET_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")
#: Any variable whose name looks like this is shown by name only, wherever it comes from.
_SECRETISH = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE", re.I)
#: cluster.workdir's default (recipes/schema/recipe.py) when a --hostfile replaces a missing
#: section.
DEFAULT_WORKDIR = "~/tuneboard"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def is_secret_name(name: str) -> bool:
    return name in SECRET_NAMES or bool(_SECRETISH.search(name))


@dataclass(frozen=True)
class Target:
    cluster: Cluster
    #: May contain `{node_rank}`; see `workdir_of`.
    workdir: str
    python: str
    #: The recipe's cluster.env (settings, not secrets), in order.
    env: tuple[tuple[str, str], ...]
    shared_fs: bool
    master_port: int
    #: None: the master node's SSH address, resolved when connecting.
    master_addr: str | None
    #: None: as many as the GPUs preflight finds.
    nproc_per_node: int | None
    cpu: bool

    def workdir_of(self, node_rank: int) -> str:
        return self.workdir.replace("{node_rank}", str(node_rank))

    @property
    def local(self) -> bool:
        return self.cluster.is_local


def secrets_from(environ: Mapping[str, str]) -> dict[str, str]:
    """The secrets the launcher passes on: those of SECRET_NAMES set (non-empty) here."""
    return {name: environ[name] for name in SECRET_NAMES if environ.get(name)}


def node_from_section(section: NodeSection) -> Node:
    # A port the recipe did not write (the default 22) leaves ~/.ssh/config's Port in force.
    port = section.port if "port" in section.model_fields_set else None
    return Node(
        host=section.address,
        port=port,
        user=section.user,
        key=Path(section.key).expanduser() if section.key else None,
        label=section.name,
    )


def resolve_target(
    recipe: Recipe,
    *,
    hostfile: Path | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    nproc_per_node: int | None = None,
    cpu: bool = False,
    cwd: Path | None = None,
) -> Target:
    section = recipe.cluster
    if nproc_per_node is not None and nproc_per_node < 1:
        raise LauncherInputError(f"--nproc-per-node must be ≥ 1, got {nproc_per_node}")
    if master_port is not None and not 1 <= master_port <= 65535:
        raise LauncherInputError(f"--master-port must be 1-65535, got {master_port}")
    if hostfile is not None:
        cluster = Cluster.from_hostfile(hostfile)
    elif section is not None:
        if not section.nodes:
            raise LauncherInputError(
                "the recipe's cluster: section names no nodes: add cluster.nodes (a list of "
                "hosts), or give --hostfile hosts.txt (its nodes then take cluster.python, "
                "venv, workdir, env and shared_fs)"
            )
        cluster = Cluster(
            tuple(node_from_section(n) for n in section.nodes), "recipe cluster.nodes"
        )
    else:
        cluster = Cluster.local()
    env = dict(section.env) if section is not None else {}
    nproc = nproc_per_node or _slots(cluster)
    if nproc is None and section is not None and "gpus_per_node" in section.model_fields_set:
        nproc = section.gpus_per_node
    if nproc is None and cpu:
        nproc = 1
    if cluster.is_local:
        workdir = str((cwd or Path.cwd()).resolve())
        python = sys.executable
        shared_fs = True
    else:
        workdir = section.workdir if section is not None else DEFAULT_WORKDIR
        python = _python(section)
        shared_fs = section.shared_fs if section is not None else False
    _check_workdir(workdir)
    addr = master_addr or env.pop("MASTER_ADDR", None)
    if addr is not None and not re.fullmatch(r"[A-Za-z0-9_.:\[\]%-]+", addr):
        raise LauncherInputError(f"master address {addr!r} is not a host name or IP address")
    port = master_port or (section.master_port if section is not None else 29500)
    env.pop("MASTER_PORT", None)
    return Target(
        cluster=cluster,
        workdir=workdir,
        python=python,
        env=tuple(env.items()),
        shared_fs=shared_fs,
        master_port=port,
        master_addr=addr or ("127.0.0.1" if cluster.is_local else None),
        nproc_per_node=nproc,
        cpu=cpu,
    )


def _slots(cluster: Cluster) -> int | None:
    slots = {node.slots for node in cluster.nodes}
    if slots == {None}:
        return None
    if None in slots or len(slots) > 1:
        detail = ", ".join(f"{n.name}: {n.slots or 'not set'}" for n in cluster.nodes)
        raise LauncherInputError(
            f"{cluster.source}: every node needs the same slots= (torchrun runs the same "
            f"number of processes on each node); got {detail}"
        )
    return slots.pop()


def _python(section: ClusterSection | None) -> str:
    if section is None:
        return "python3"
    if section.venv is not None:
        return section.venv.rstrip("/") + "/bin/python"
    return section.python or "python3"


def _check_workdir(workdir: str) -> None:
    for name in _PLACEHOLDER.findall(workdir):
        if name != "node_rank":
            raise LauncherInputError(
                f"cluster.workdir {workdir!r}: unknown placeholder {{{name}}}; "
                "only {node_rank} is filled in"
            )
    if "\n" in workdir or "\0" in workdir:
        raise LauncherInputError("cluster.workdir must be one line")
    if workdir.startswith("~") and not (workdir == "~" or workdir.startswith("~/")):
        raise LauncherInputError(
            f"cluster.workdir {workdir!r}: write it as ~/... or in full (~user is not read)"
        )


def local_path(base: Path, path: str) -> Path:
    """A recipe path as the launching machine sees it (relative to the launch directory)."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base / p
