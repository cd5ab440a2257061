"""A launched job again, from its state.json: its nodes, SSH options and torchrun plan.

The detached supervisor (launcher/job/detached.py), `tuneboard stop/resume`
(launcher/job/control.py) and the dashboard's SSH agents all reconnect to a job's nodes
from what the launch recorded; this is the one place that turns the record back into
launcher objects.
"""

from __future__ import annotations

from pathlib import Path

from launcher.cluster import Node
from launcher.job.store import JobDir, JobState
from launcher.job.torchrun import JobPlan, NodeJob
from launcher.target import is_secret_name
from launcher.transport.base import ConnectOptions
from recipes.schema import RecipeError, load_recipe


def nodes_of(state: JobState) -> tuple[Node, ...]:
    return tuple(
        Node(
            host=n.host,
            port=n.port,
            user=n.user,
            slots=None,
            key=Path(n.key) if n.key else None,
            label=n.label,
            local=n.local,
        )
        for n in state.nodes
    )


def connect_options(state: JobState) -> ConnectOptions:
    launch = state.launch
    return ConnectOptions(
        known_hosts=Path(launch.known_hosts),
        ssh_config=Path(launch.ssh_config) if launch.ssh_config else None,
        user=launch.user,
        identity_files=tuple(Path(p) for p in launch.identity_files),
        use_agent=launch.use_agent,
        look_for_keys=launch.look_for_keys,
        connect_timeout_s=launch.connect_timeout_s,
    )


def plan_of(job: JobDir, state: JobState) -> JobPlan:
    """The job's plan again, from state.json (and, for settings state.json does not keep
    because their names look secret, from the job's recipe copy)."""
    env = dict(state.env)
    try:
        recipe = load_recipe(job.path / state.recipe_file, list(state.launch.overrides))
    except RecipeError:
        recipe = None
    if recipe is not None and recipe.cluster is not None:
        env.update({k: v for k, v in recipe.cluster.env.items() if is_secret_name(k)})
    nodes = tuple(
        NodeJob(node, n.node_rank, n.nproc, n.workdir, n.iface)
        for node, n in zip(nodes_of(state), state.nodes, strict=True)
    )
    return JobPlan(
        job_id=state.id,
        marker=state.marker,
        nodes=nodes,
        master_addr=state.master_addr,
        master_port=state.master_port,
        python=state.python,
        env=tuple(env.items()),
        secret_names=state.secret_names,
        program=state.launch.program,
        recipe_name=state.recipe_file,
        overrides=state.launch.overrides,
        cpu=state.launch.cpu,
        shared_fs=state.shared_fs,
    )
