"""`python -m launcher.job.detached JOBDIR`: the detached supervisor of a `--detach` launch.

Started by launcher/job/launch.py in a session of its own (it outlives the launching
terminal), it reconnects to the nodes, starts torchrun on each and watches the job exactly
as a foreground launch does (launcher/job/supervisor.py), writing state.json, the logs and the
metrics mirror. Secrets reach it the way they reached the launcher: in its environment.
SIGTERM (`tuneboard stop`) stops the job on every node.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from launcher.cluster import Cluster
from launcher.errors import LauncherError
from launcher.job.launch import live_options
from launcher.job.reconnect import connect_options, nodes_of, plan_of
from launcher.job.store import JobDir, RootCause
from launcher.job.supervisor import NullSink, Supervisor, SupervisorOptions
from launcher.target import secrets_from
from launcher.transport.connect import open_transport
from launcher.transport.fanout import NodePool


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m launcher.job.detached JOBDIR", file=sys.stderr)
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
