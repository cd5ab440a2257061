"""`python -m launcher.supervisor JOBDIR`: the detached supervisor of a `--detach` launch.

Started by launcher/launch.py in a session of its own (it outlives the launching
terminal), it reconnects to the nodes, starts torchrun on each and watches the job exactly
as a foreground launch does (launcher/supervise.py), writing state.json, the logs and the
metrics mirror. Secrets reach it the way they reached the launcher: in its environment.
SIGTERM (`tuneboard stop`) stops the job on every node.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from launcher.cluster import Cluster, Node
from launcher.errors import LauncherError
from launcher.fanout import NodePool
from launcher.jobs import JobDir, JobState, RootCause
from launcher.launch import live_options
from launcher.supervise import NullSink, Supervisor, SupervisorOptions
from launcher.target import is_secret_name, secrets_from
from launcher.torchrun import JobPlan, NodeJob
from launcher.transport import ConnectOptions, open_transport
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


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m launcher.supervisor JOBDIR", file=sys.stderr)
        return 2
    job = JobDir(Path(argv[0]))
    state = job.read_state()
    print(f"supervisor of {state.id} started", flush=True)
    options = connect_options(state)
    live = live_options(options, state.launch.node_timeout_s)
    plan = plan_of(job, state)
    with NodePool(Cluster(nodes_of(state), "job state"), live) as pool:
        if pool.failures:
            first = pool.failures[0]
            rank = next(n.node_rank for n in state.nodes if n.name == first.node.name)
            cause = RootCause(
                first.node.name, rank, None, None, f"cannot connect: {first.error}", ()
            )
            job.write_state(
                dataclasses.replace(state, status="failed", ended_at=time.time(), root_cause=cause)
            )
            print(f"cannot connect: {first.error}", flush=True)
            return 1
        supervisor = Supervisor(
            job,
            state,
            plan,
            pool.transports,
            lambda node: open_transport(node, live),
            secrets_from(os.environ),
            NullSink(),
            SupervisorOptions(
                grace_s=state.launch.grace_s, node_timeout_s=state.launch.node_timeout_s
            ),
        )
        try:
            final = supervisor.run()
        except LauncherError as err:
            print(f"supervisor failed: {err}", flush=True)
            return 1
    print(f"job {final.id} {final.status}", flush=True)
    return 0 if final.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
