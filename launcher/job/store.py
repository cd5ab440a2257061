"""The job directory on the launching machine and its state.json.

`$XDG_STATE_HOME/tuneboard/jobs/<id>/` (default `~/.local/state/tuneboard/jobs/<id>/`):

    state.json        JobState below; written atomically by the job's supervisor only
    <recipe>.yaml     the recipe as launched (the nodes get the same bytes)
    job.log           every node's lines in arrival order, each `node/rank text`
    logs/<node>.log   the same, one file per node
    metrics.jsonl     rank 0's <output.dir>/metrics.jsonl, mirrored as it grows
    supervisor.log    the detached supervisor's own output (--detach)

state.json is a stable, documented schema (`schema_version`); it never holds a secret's
value, only the names of the secrets that were passed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from launcher.errors import LauncherInputError

SCHEMA_VERSION = 1
JobStatus = Literal["starting", "running", "stopping", "succeeded", "failed", "stopped"]
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "stopped"})
NodeStatus = Literal["pending", "running", "exited", "unreachable", "stopped"]


@dataclass(frozen=True)
class NodeState:
    name: str
    host: str
    port: int | None
    user: str | None
    key: str | None
    label: str | None
    local: bool
    node_rank: int
    nproc: int
    workdir: str
    iface: str | None
    status: NodeStatus = "pending"
    pgid: int | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class RootCause:
    node: str
    node_rank: int
    #: Global rank that failed first, when torchrun named one.
    rank: int | None
    exit_code: int | None
    reason: str
    last_lines: tuple[str, ...]


@dataclass(frozen=True)
class RankMemory:
    """One rank's memory peaks so far, as the recipes measure them
    (recipes/train/memory_peaks.py); None where a figure does not exist (no CUDA)."""

    rank: int
    node: str
    device: str  # "cuda:N" or "cpu"
    allocated_peak_bytes: int | None = None
    reserved_peak_bytes: int | None = None
    device_used_bytes: int | None = None
    rss_peak_bytes: int | None = None
    torch_version: str | None = None

    @property
    def measure(self) -> str:
        """What is set against the plan: the caching allocator's reserved peak on CUDA
        (what runs out first), the process's peak RSS on a CPU run (the only figure)."""
        return "RSS" if self.device == "cpu" else "reserved"

    @property
    def measured_bytes(self) -> int | None:
        return self.rss_peak_bytes if self.device == "cpu" else self.reserved_peak_bytes


def rank_memory(value: object) -> tuple[RankMemory, ...]:
    """A metrics line's `memory` list (recipes/train/metrics.py) as RankMemory; entries
    that are not well-formed are left out (a line from another tool is no error)."""
    if not isinstance(value, list):
        return ()
    out = []
    for item in value:
        if not isinstance(item, dict):
            continue
        rank, node, device = _json_int(item.get("rank")), item.get("node"), item.get("device")
        if rank is None or not isinstance(node, str) or not isinstance(device, str):
            continue
        out.append(
            RankMemory(
                rank=rank,
                node=node,
                device=device,
                allocated_peak_bytes=_json_int(item.get("allocated_peak_bytes")),
                reserved_peak_bytes=_json_int(item.get("reserved_peak_bytes")),
                device_used_bytes=_json_int(item.get("device_used_bytes")),
                rss_peak_bytes=_json_int(item.get("rss_peak_bytes")),
                torch_version=_json_str(item.get("torch_version")),
            )
        )
    return tuple(sorted(out, key=lambda m: m.rank))


def _json_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class PlannedMemory:
    """What the planner said one GPU would hold, at launch (launcher/preflight/fit.py)."""

    setup_label: str
    #: The GPU it was planned for; None on a CPU run (then only the tensors are planned).
    gpu_name: str | None
    #: Everything on the GPU (what nvidia-smi would show); None on a CPU run.
    total_bytes: int | None
    #: Tensors alone (the total less CUDA context, workspaces and fragmentation).
    tensor_bytes: int


@dataclass(frozen=True)
class Progress:
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    updated_at: float | None = None
    #: Every rank's peaks from rank 0's latest metrics line (empty before the first one).
    memory: tuple[RankMemory, ...] = ()


@dataclass(frozen=True)
class LaunchRecord:
    """How the job was launched: enough to launch it again (`tuneboard resume`)."""

    recipe_source: str
    cwd: str
    overrides: tuple[str, ...]
    hostfile: str | None
    master_addr: str | None
    master_port: int | None
    nproc_per_node: int | None
    cpu: bool
    force: bool
    grace_s: float
    node_timeout_s: float
    program: tuple[str, ...]
    known_hosts: str
    ssh_config: str | None
    identity_files: tuple[str, ...]
    user: str | None
    use_agent: bool
    look_for_keys: bool
    connect_timeout_s: float


@dataclass(frozen=True)
class JobState:
    id: str
    name: str
    marker: str
    status: JobStatus
    recipe_file: str
    created_at: float
    launch: LaunchRecord
    master_addr: str
    master_port: int
    python: str
    env: tuple[tuple[str, str], ...]
    secret_names: tuple[str, ...]
    shared_fs: bool
    #: rank 0's metrics file on the master node (relative to the login directory).
    metrics_path: str
    nodes: tuple[NodeState, ...]
    schema_version: int = SCHEMA_VERSION
    started_at: float | None = None
    ended_at: float | None = None
    supervisor_pid: int | None = None
    #: The supervisor's start time (/proc/PID/stat field 22): a recycled pid is not it.
    supervisor_start: int | None = None
    supervisor_host: str | None = None
    progress: Progress | None = None
    root_cause: RootCause | None = None
    message: str | None = None
    resumed_from: str | None = None
    #: The planner's per-GPU estimate for this recipe at launch; None when not planned.
    planned: PlannedMemory | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def world_size(self) -> int:
        return sum(n.nproc for n in self.nodes)

    def with_node(self, name: str, **changes: object) -> JobState:
        nodes = tuple(
            dataclasses.replace(n, **changes) if n.name == name else n  # type: ignore[arg-type]
            for n in self.nodes
        )
        return dataclasses.replace(self, nodes=nodes)


_STATE = TypeAdapter(JobState)


def state_from_json(data: bytes | str) -> JobState:
    """A state.json's bytes as a JobState (keys it does not know are ignored).

    Raises pydantic's ValidationError for a file that is not a job state, or is half
    written; the dashboard (tuneboard/sources/job_dir.py) then reads it again later.
    """
    return _STATE.validate_json(data)


def state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tuneboard"


def jobs_root(root: Path | None = None) -> Path:
    return (root or state_home()) / "jobs"


def new_job_id(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:40] or "job"
    return f"{slug}-{time.strftime('%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:@-]+", "_", name)


class JobDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def combined_log(self) -> Path:
        return self.path / "job.log"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def supervisor_log(self) -> Path:
        return self.path / "supervisor.log"

    def node_log(self, node: str) -> Path:
        return self.path / "logs" / f"{safe_file_name(node)}.log"

    def read_state(self) -> JobState:
        try:
            return state_from_json(self.state_path.read_bytes())
        except FileNotFoundError:
            raise LauncherInputError(f"job {self.id}: no state.json in {self.path}") from None
        except ValidationError as err:
            raise LauncherInputError(
                f"job {self.id}: {self.state_path} is not a tuneboard state file "
                f"({err.error_count()} errors)"
            ) from None

    def write_state(self, state: JobState) -> None:
        data = json.dumps(dataclasses.asdict(state), indent=1)
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(data + "\n", encoding="utf-8")
        os.replace(tmp, self.state_path)

    @classmethod
    def create(cls, job_id: str, root: Path | None = None) -> JobDir:
        path = jobs_root(root) / job_id
        path.mkdir(parents=True, mode=0o700)
        (path / "logs").mkdir()
        return cls(path)


def find_job(job: str, root: Path | None = None) -> JobDir:
    """A job by id, or by a unique prefix of its id ("latest" means the newest)."""
    base = jobs_root(root)
    if job == "latest":
        jobs = list_job_dirs(root)
        if not jobs:
            raise LauncherInputError(f"no jobs yet in {base}")
        return jobs[-1]
    if not re.fullmatch(r"[A-Za-z0-9._-]+", job):
        raise LauncherInputError(f"{job!r} is not a job id (see `tuneboard jobs`)")
    exact = base / job
    if (exact / "state.json").is_file():
        return JobDir(exact)
    matches = [d for d in list_job_dirs(root) if d.id.startswith(job)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LauncherInputError(f"no job {job!r} in {base} (see `tuneboard jobs`)")
    shown = ", ".join(d.id for d in matches[:5])
    raise LauncherInputError(f"{job!r} matches {len(matches)} jobs ({shown}): give more of the id")


def list_job_dirs(root: Path | None = None) -> list[JobDir]:
    """Every job with a readable state file, oldest first."""
    base = jobs_root(root)
    if not base.is_dir():
        return []
    found: list[tuple[float, JobDir]] = []
    for path in base.iterdir():
        job = JobDir(path)
        if job.state_path.is_file():
            try:
                found.append((job.read_state().created_at, job))
            except LauncherInputError:
                continue  # a foreign or half-written folder: not a job to list
    return [job for _, job in sorted(found, key=lambda item: item[0])]


def process_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def supervisor_alive(state: JobState) -> bool:
    """Whether the process watching the job still runs (pid and start time both match, so
    a recycled pid is not mistaken for it). Only answerable on the launching machine."""
    pid = state.supervisor_pid
    if pid is None or state.supervisor_host != socket.gethostname():
        return False
    return process_start(pid) == state.supervisor_start
