"""One torchrun command per node, its environment, and where its files live on the node.

Each node runs `PYTHON -m torch.distributed.run` (torchrun through the node's own python:
no reliance on `torchrun` being on the remote PATH) with static rendezvous: the node rank,
master address and port are written out, so every rank knows its place before it starts
and a wrong value fails in preflight, not in a hang. `--max-restarts 0`: a failed rank
fails the job, and the launcher stops every node (torchrun leaves gang failure to the job
manager). `--tee 3` with `TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE` makes torchrun prefix every
worker line with its global rank; lines without the prefix are torchrun's own.

Node-side files, under `<workdir>/.tuneboard/jobs/<job id>/`: the recipe, and per node (a
shared workdir holds every node's) `node<R>/torchrun.pid` (+ `.exit`), `node<R>/torchrun.log`
(the node's whole stream) and torchrun's per-rank logs in `node<R>/ranks/`.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from launcher.cluster import Node
from launcher.target import is_secret_name
from launcher.transport.base import node_path
from launcher.transport.remote_shell import join_argv

#: What every node runs after `python`, unless a test or a tool asks for another program.
RECIPE_PROGRAM = ("-m", "recipes.run")
RANK_PREFIX_TEMPLATE = "[tb-rank${rank}]:"
_RANK_PREFIX = re.compile(r"^\[tb-rank(\d+)\]:")


@dataclass(frozen=True)
class NodeJob:
    """One node's part of a job."""

    node: Node
    node_rank: int
    nproc: int
    workdir: str
    #: Interface that reaches the master (GLOO/NCCL_SOCKET_IFNAME), when preflight found it.
    iface: str | None

    @property
    def first_rank(self) -> int:
        return self.node_rank * self.nproc


@dataclass(frozen=True)
class JobPlan:
    job_id: str
    #: The job's marker; each node's processes carry `node_marker(node)` (see there).
    marker: str
    nodes: tuple[NodeJob, ...]
    master_addr: str
    master_port: int
    python: str
    #: Settings for every node (the recipe's cluster.env and the launcher's); no secrets.
    env: tuple[tuple[str, str], ...]
    #: Names of the secrets passed through the environment (values never stored).
    secret_names: tuple[str, ...]
    #: After `python`: ("-m", "recipes.run") or a script path.
    program: tuple[str, ...]
    #: The recipe's file name in the node's job folder.
    recipe_name: str
    overrides: tuple[str, ...]
    cpu: bool
    shared_fs: bool

    def node_marker(self, node: NodeJob) -> str:
        """TUNEBOARD_JOB of one node's processes: per node, so that the stop of one node
        never reaches another's processes when "nodes" share a machine (measured: a second
        TERM that reaches torchrun during its own shutdown makes it hang until KILLed)."""
        return node_marker(self.marker, node.node_rank)

    @property
    def nnodes(self) -> int:
        return len(self.nodes)

    @property
    def world_size(self) -> int:
        return sum(n.nproc for n in self.nodes)

    @property
    def node_dir(self) -> str:
        """The job's folder on a node, relative to the node's workdir."""
        return f".tuneboard/jobs/{self.job_id}"

    def recipe_path(self) -> str:
        """The recipe as the job sees it (relative to its working directory)."""
        return f"{self.node_dir}/{self.recipe_name}"

    def files(self, node: NodeJob) -> NodeFiles:
        base = posixpath.join(node_path(node.workdir), self.node_dir)
        # Per node, so that nodes sharing one workdir (shared_fs) never share a pid file.
        own = f"{base}/node{node.node_rank}"
        return NodeFiles(
            dir=own,
            recipe=f"{base}/{self.recipe_name}",
            pid=f"{own}/torchrun.pid",
            log=f"{own}/torchrun.log",
            rank_logs=f"{own}/ranks",
        )


@dataclass(frozen=True)
class NodeFiles:
    """Paths on the node (relative ones are relative to the login directory)."""

    dir: str
    recipe: str
    pid: str
    log: str
    rank_logs: str

    @property
    def exit(self) -> str:
        return self.pid + ".exit"


def node_marker(job_marker: str, node_rank: int) -> str:
    return f"{job_marker}.n{node_rank}"


def argv(plan: JobPlan, node: NodeJob) -> tuple[str, ...]:
    """The exact command the node runs (in its workdir)."""
    return (
        plan.python,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(plan.nnodes),
        "--nproc-per-node",
        str(node.nproc),
        "--node-rank",
        str(node.node_rank),
        "--master-addr",
        plan.master_addr,
        "--master-port",
        str(plan.master_port),
        "--max-restarts",
        "0",
        "--rdzv-id",
        plan.job_id,
        "--tee",
        "3",
        "--log-dir",
        f"{plan.node_dir}/node{node.node_rank}/ranks",
        *plan.program,
        plan.recipe_path(),
        *plan.overrides,
    )


def environment(
    plan: JobPlan, node: NodeJob, secrets: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The node's environment: settings, then the launcher's own, then the secrets."""
    env = dict(plan.env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if node.iface is not None:
        env.setdefault("GLOO_SOCKET_IFNAME", node.iface)
        env.setdefault("NCCL_SOCKET_IFNAME", node.iface)
    if plan.cpu:
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
    env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] = RANK_PREFIX_TEMPLATE
    env["TUNEBOARD_JOB_ID"] = plan.job_id
    env["TUNEBOARD_NODE_RANK"] = str(node.node_rank)
    for name in plan.secret_names:
        if secrets is not None and name in secrets:
            env[name] = secrets[name]
    return env


@dataclass(frozen=True)
class CommandPreview:
    """What `--dry-run` shows for one node: secrets by name only."""

    node: str
    node_rank: int
    ranks: tuple[int, ...]
    workdir: str
    #: (name, value); value None for a secret.
    env: tuple[tuple[str, str | None], ...]
    argv: tuple[str, ...]

    def shell_line(self) -> str:
        """A copy-pasteable line; secrets as `"$NAME"` from your own environment."""
        assignments = [
            f'{name}="${name}"' if value is None else join_argv([f"{name}={value}"])
            for name, value in self.env
        ]
        return f"cd {shell_dir(self.workdir)} && env {' '.join(assignments)} {join_argv(self.argv)}"


def shell_dir(workdir: str) -> str:
    """A node's workdir as one shell word that means on the node what the launcher means:
    `~/tuneboard` -> `~/tuneboard`, `~/my dir` -> `~/'my dir'` (the `~` left unquoted so
    the shell expands it; the rest `shlex.quote`d), a relative path -> under `~` (the
    launcher takes it from the login directory), an absolute one quoted as it is."""
    path = node_path(workdir)
    if path == ".":
        return "~"
    return shlex.quote(path) if posixpath.isabs(path) else "~/" + shlex.quote(path)


def preview(plan: JobPlan, node: NodeJob) -> CommandPreview:
    env = environment(plan, node)
    shown: list[tuple[str, str | None]] = [
        (name, None if is_secret_name(name) else value) for name, value in env.items()
    ]
    shown += [(name, None) for name in plan.secret_names if name not in env]
    shown.append(("TUNEBOARD_JOB", plan.node_marker(node)))
    first = node.first_rank
    return CommandPreview(
        node=node.node.name,
        node_rank=node.node_rank,
        ranks=tuple(range(first, first + node.nproc)),
        workdir=node.workdir,
        env=tuple(shown),
        argv=argv(plan, node),
    )


def split_rank(line: str) -> tuple[int | None, str]:
    """`[tb-rank3]:text` -> (3, "text"); a torchrun line -> (None, line)."""
    match = _RANK_PREFIX.match(line)
    if match is None:
        return None, line
    return int(match.group(1)), line[match.end() :]
