"""`tuneboard launch`, as phases the CLI calls one after the other and renders in between.

    prepared = prepare(request)          recipe, nodes, files: bad input raises here
    pool = connect(prepared)             one connection per node, all at once
    checked = check(prepared, pool)      preflight + the planner's fit check
    plan = plan_job(prepared, checked)   one torchrun command per node
    job, state = create_job(...)         the job directory (nothing runs yet)
    sync_files(...)                      recipe and data to every node
    run_foreground(...) | spawn_supervisor(...)

Nothing is started on any node before every check passed and every file is in place, so
bad input or a failed check never leaves a half-started job.

--detach: the supervisor (launcher/job/supervisor.py) then runs as a small process of its own
on this machine (`python -m launcher.job.detached JOBDIR`, its own session, so it outlives
the terminal), with the same fail-fast stop as a foreground launch; `tuneboard status`,
`logs -f` and `stop` read and signal it through the job directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.errors import LauncherError, LauncherInputError
from launcher.job.store import (
    JobDir,
    JobState,
    LaunchRecord,
    NodeState,
    PlannedMemory,
    new_job_id,
)
from launcher.job.supervisor import Sink, Supervisor, SupervisorOptions
from launcher.job.sync import FilePlan, SyncResult, plan_files, sync
from launcher.job.torchrun import RECIPE_PROGRAM, CommandPreview, JobPlan, NodeJob, preview
from launcher.preflight.checks import Check, Needs, PreflightReport, run_preflight
from launcher.preflight.data import with_data_check
from launcher.preflight.fit import FitReport, check_fit, model_spec
from launcher.target import Target, is_secret_name, resolve_target, secrets_from
from launcher.transport.base import ConnectOptions, Transport, node_path
from launcher.transport.connect import open_transport
from launcher.transport.fanout import NodePool, NodeResult
from planner.errors import PlannerInputError
from recipes.schema import Recipe, RecipeError, load_recipe

#: The supervisor notices a dead node within ~3 keepalives (launcher/transport/ssh.py),
SUPERVISOR_KEEPALIVE_S = 5
#: and a stuck one (its kernel answers, its sshd does not) when a read gets no answer.
SUPERVISOR_SFTP_TIMEOUT_S = 10.0


def live_options(options: ConnectOptions, node_timeout_s: float) -> ConnectOptions:
    """Connection settings for watching a job: a lost node must be noticed in seconds."""
    return dataclasses.replace(
        options,
        keepalive_s=min(options.keepalive_s, SUPERVISOR_KEEPALIVE_S),
        sftp_timeout_s=min(options.sftp_timeout_s, SUPERVISOR_SFTP_TIMEOUT_S, node_timeout_s),
    )


@dataclass(frozen=True)
class LaunchRequest:
    recipe_path: Path
    overrides: tuple[str, ...] = ()
    hostfile: Path | None = None
    master_addr: str | None = None
    master_port: int | None = None
    nproc_per_node: int | None = None
    cpu: bool = False
    force: bool = False
    grace_s: float = 10.0
    node_timeout_s: float = 60.0
    #: Where relative recipe paths are read from on this machine.
    cwd: Path = field(default_factory=Path.cwd)
    #: After `python` on every node; the CLI always runs the recipe.
    program: tuple[str, ...] = RECIPE_PROGRAM
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    state_root: Path | None = None
    resumed_from: str | None = None


@dataclass(frozen=True)
class Prepared:
    request: LaunchRequest
    recipe: Recipe
    recipe_bytes: bytes
    target: Target
    files: FilePlan


@dataclass(frozen=True)
class Checked:
    report: PreflightReport
    fit: FitReport

    def refused(self, force: bool) -> bool:
        return not self.report.ok or (self.fit.refused and not force)


def prepare(request: LaunchRequest) -> Prepared:
    """Read and validate everything local. Raises LauncherInputError on bad input."""
    if request.grace_s < 0 or request.node_timeout_s <= 0:
        raise LauncherInputError("--grace must be ≥ 0 and --node-timeout > 0 seconds")
    try:
        recipe = load_recipe(request.recipe_path, list(request.overrides))
        data = request.recipe_path.read_bytes()
    except RecipeError as err:
        raise LauncherInputError(str(err)) from None
    except OSError as err:
        raise LauncherInputError(f"{request.recipe_path}: {err.strerror or err}") from None
    target = resolve_target(
        recipe,
        hostfile=request.hostfile,
        master_addr=request.master_addr,
        master_port=request.master_port,
        nproc_per_node=request.nproc_per_node,
        cpu=request.cpu,
        cwd=request.cwd,
    )
    if request.program == RECIPE_PROGRAM and not recipe.data.train_paths():
        raise LauncherInputError(
            f"{request.recipe_path}: data.train is not set, so there is nothing to train on: "
            "set data.train in the recipe (or add data.train=PATH to the command) to a .jsonl, "
            ".json, .parquet or .csv file or a saved HF datasets folder"
        )
    return Prepared(request, recipe, data, target, plan_files(recipe, target, request.cwd))


def connect(prepared: Prepared) -> NodePool:
    """One connection per node, all at once; kept for the foreground supervisor."""
    request = prepared.request
    return NodePool(prepared.target.cluster, live_options(request.connect, request.node_timeout_s))


def needs_for(recipe: Recipe, files: FilePlan, *, resume: bool) -> Needs:
    packages = ["tuneboard", "torch", "transformers", "trl", "datasets", "accelerate"]
    if recipe.method.kind in ("lora", "qlora", "dora"):
        packages.append("peft")
    if recipe.distributed.uses_deepspeed:
        packages.append("deepspeed")
    if recipe.method.kind == "qlora" or recipe.training.optimizer.endswith("8bit"):
        packages.append("bitsandbytes")
    for reporter in recipe.output.report_to:
        if reporter != "none":
            packages.append(reporter)
    modules = ["recipes.run", *(p for p in packages if p != "tuneboard")]
    return Needs(
        packages=tuple(packages),
        modules=tuple(modules),
        paths=files.on_nodes,
        output_dir=recipe.output.dir,
        resume=resume,
    )


def check(prepared: Prepared, pool: NodePool) -> Checked:
    recipe, target = prepared.recipe, prepared.target
    master = pool.transports.get(target.cluster.master.name)
    unknown = ""
    try:
        spec = model_spec(recipe, _config_reader(master, target.workdir_of(0)))
    except PlannerInputError as err:
        spec, unknown = None, str(err)
    resume = recipe.training.resume == "auto" and prepared.request.resumed_from is not None
    needs = needs_for(recipe, prepared.files, resume=resume)
    probe_fit = check_fit(
        recipe,
        spec,
        nodes=1,
        nproc_per_node=1,
        gpu_name=None,
        gpu_memory_bytes=None,
        min_free_gpu_bytes=None,
        node_ram_bytes=None,
        cpu=True,
        unknown_model=unknown,
    )
    if probe_fit.checkpoint_bytes is not None:
        needs = dataclasses.replace(needs, disk_bytes=probe_fit.checkpoint_bytes)
    report = run_preflight(pool, target, needs)
    if prepared.request.program == RECIPE_PROGRAM:
        report = with_data_check(report, recipe, prepared.files, target, pool, prepared.request.cwd)
    if not resume:
        report = with_finished_run_check(report, recipe)
    facts = [n.facts for n in report.nodes if n.facts is not None]
    gpus = [g for f in facts for g in f.gpus]
    rams = [f.mem_total_bytes for f in facts if f.mem_total_bytes is not None]
    frees = [g.memory_free_bytes for g in gpus if g.memory_free_bytes is not None]
    fit = check_fit(
        recipe,
        spec,
        nodes=len(target.cluster.nodes),
        nproc_per_node=report.nproc_per_node or 1,
        gpu_name=gpus[0].name if gpus else None,
        gpu_memory_bytes=min(g.memory_total_bytes for g in gpus) if gpus else None,
        min_free_gpu_bytes=min(frees) if frees else None,
        node_ram_bytes=min(rams) if rams else None,
        cpu=target.cpu,
        unknown_model=unknown,
    )
    return Checked(report, fit)


def with_finished_run_check(report: PreflightReport, recipe: Recipe) -> PreflightReport:
    """A new launch whose output.dir holds a checkpoint at or past max_steps (an earlier run
    finished there): training.resume=auto would resume it and train nothing. Warned on the
    master with the overrides that start fresh."""
    master = report.nodes[0]
    latest = master.facts.latest_checkpoint if master.facts is not None else None
    max_steps = recipe.training.max_steps
    if recipe.training.resume != "auto" or latest is None:
        return report
    out = recipe.output.dir
    if max_steps is not None and latest >= max_steps:
        check = Check(
            "resume",
            "warn",
            f"{out} holds checkpoint-{latest}, at max_steps {max_steps}: training.resume=auto "
            f"resumes it and trains nothing; to start fresh add training.resume=none (or "
            f"output.dir={out.rstrip('/')}-2)",
            "finished",
        )
    else:
        check = Check(
            "resume",
            "ok",
            f"{out} holds checkpoint-{latest}: training.resume=auto resumes from it "
            "(training.resume=none starts fresh)",
            f"step {latest}",
        )
    nodes = (dataclasses.replace(master, checks=(*master.checks, check)), *report.nodes[1:])
    return dataclasses.replace(report, nodes=nodes)


def _config_reader(master: Transport | None, workdir: str) -> Any:
    def read(model: str) -> dict[str, Any] | None:
        if master is None:
            return None
        base = model if model.startswith(("/", "~")) else posixpath.join(workdir, model)
        try:
            data = master.read_from(posixpath.join(node_path(base), "config.json"), 0)
        except LauncherError:
            return None
        try:
            value = json.loads(data) if data else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    return read


def plan_job(prepared: Prepared, checked: Checked, job_id: str | None = None) -> JobPlan:
    recipe, target, report = prepared.recipe, prepared.target, checked.report
    job_id = job_id or new_job_id(recipe.name or prepared.request.recipe_path.stem)
    nproc = report.nproc_per_node or 1
    nodes = tuple(
        NodeJob(n.node, n.node_rank, nproc, n.workdir, n.facts.iface if n.facts else None)
        for n in report.nodes
    )
    secrets = secrets_from(os.environ)
    name = prepared.request.recipe_path.name
    return JobPlan(
        job_id=job_id,
        marker=f"tb-{job_id}",
        nodes=nodes,
        master_addr=report.master_addr,
        master_port=report.master_port,
        python=target.python,
        env=target.env,
        secret_names=tuple(secrets),
        program=prepared.request.program,
        recipe_name=name if name.endswith((".yaml", ".yml")) else name + ".yaml",
        overrides=prepared.request.overrides,
        cpu=target.cpu,
        shared_fs=target.shared_fs,
    )


def previews(plan: JobPlan) -> tuple[CommandPreview, ...]:
    return tuple(preview(plan, node) for node in plan.nodes)


def create_job(
    prepared: Prepared, plan: JobPlan, fit: FitReport | None = None
) -> tuple[JobDir, JobState]:
    request, recipe = prepared.request, prepared.recipe
    job = JobDir.create(plan.job_id, request.state_root)
    (job.path / plan.recipe_name).write_bytes(prepared.recipe_bytes)
    master = plan.nodes[0]
    output = recipe.output.dir
    metrics = (
        posixpath.join(node_path(master.workdir), output)
        if not output.startswith(("/", "~"))
        else node_path(output)
    )
    opts = request.connect
    state = JobState(
        id=plan.job_id,
        name=recipe.name or request.recipe_path.stem,
        marker=plan.marker,
        status="starting",
        recipe_file=plan.recipe_name,
        created_at=time.time(),
        launch=LaunchRecord(
            recipe_source=str(request.recipe_path.resolve()),
            cwd=str(request.cwd.resolve()),
            overrides=request.overrides,
            hostfile=str(request.hostfile.resolve()) if request.hostfile else None,
            master_addr=request.master_addr,
            master_port=request.master_port,
            nproc_per_node=request.nproc_per_node,
            cpu=request.cpu,
            force=request.force,
            grace_s=request.grace_s,
            node_timeout_s=request.node_timeout_s,
            program=request.program,
            known_hosts=str(opts.known_hosts),
            ssh_config=str(opts.ssh_config) if opts.ssh_config else None,
            identity_files=tuple(str(p) for p in opts.identity_files),
            user=opts.user,
            use_agent=opts.use_agent,
            look_for_keys=opts.look_for_keys,
            connect_timeout_s=opts.connect_timeout_s,
        ),
        master_addr=plan.master_addr,
        master_port=plan.master_port,
        python=plan.python,
        env=tuple((k, v) for k, v in plan.env if not is_secret_name(k)),
        secret_names=plan.secret_names,
        shared_fs=plan.shared_fs,
        metrics_path=posixpath.join(metrics, "metrics.jsonl"),
        nodes=tuple(
            NodeState(
                name=n.node.name,
                host=n.node.host,
                port=n.node.port,
                user=n.node.user,
                key=str(n.node.key) if n.node.key else None,
                label=n.node.label,
                local=n.node.local,
                node_rank=n.node_rank,
                nproc=n.nproc,
                workdir=n.workdir,
                iface=n.iface,
            )
            for n in plan.nodes
        ),
        resumed_from=request.resumed_from,
        planned=planned_memory(fit),
    )
    job.write_state(state)
    return job, state


def planned_memory(fit: FitReport | None) -> PlannedMemory | None:
    """What the fit check planned per GPU, kept in state.json beside what the run measures."""
    if fit is None or fit.setup_label is None or fit.planned_tensor_bytes is None:
        return None
    return PlannedMemory(
        setup_label=fit.setup_label,
        gpu_name=fit.gpu_name,
        total_bytes=fit.breakdown.total_bytes if fit.breakdown is not None else None,
        tensor_bytes=fit.planned_tensor_bytes,
    )


def sync_files(
    prepared: Prepared, plan: JobPlan, pool: NodePool, job: JobDir
) -> tuple[NodeResult[SyncResult], ...]:
    """The data files (unless shared_fs) and the job's recipe to every node."""
    recipe_copy = job.path / plan.recipe_name
    extra: dict[str, tuple[tuple[Path, str], ...]] = {}
    for i, node in enumerate(plan.nodes):
        if plan.shared_fs and i > 0 and node.workdir == plan.nodes[0].workdir:
            continue  # one filesystem: one copy (parallel writers would race)
        extra[node.node.name] = ((recipe_copy, plan.files(node).recipe),)
    workdirs = {n.node.name: n.workdir for n in plan.nodes}
    return sync(pool, prepared.files, workdirs, extra)


def supervisor_options(request: LaunchRequest) -> SupervisorOptions:
    return SupervisorOptions(grace_s=request.grace_s, node_timeout_s=request.node_timeout_s)


def run_foreground(
    prepared: Prepared, plan: JobPlan, pool: NodePool, job: JobDir, state: JobState, sink: Sink
) -> JobState:
    request = prepared.request
    options = live_options(request.connect, request.node_timeout_s)
    supervisor = Supervisor(
        job,
        state,
        plan,
        pool.transports,
        lambda node: open_transport(node, options),
        secrets_from(os.environ),
        sink,
        supervisor_options(prepared.request),
    )
    return supervisor.run()


def spawn_supervisor(job: JobDir, *, wait_s: float = 60.0) -> JobState:
    """Start the detached supervisor; return once it has started the job (or failed to)."""
    with job.supervisor_log.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "launcher.job.detached", str(job.path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ),
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        state = job.read_state()
        if state.status != "starting":
            return state
        if child.poll() is not None:
            raise LauncherError(
                f"job {job.id}: the supervisor exited ({child.returncode}) before starting "
                f"the job; see {job.supervisor_log}"
            )
        time.sleep(0.05)
    raise LauncherError(f"job {job.id}: not started after {wait_s:g} s; see {job.supervisor_log}")
