"""`tuneboard stop / status / resume` on a job directory.

stop: when the job's supervisor (the foreground launcher or the detached supervisor) is
alive, it gets SIGTERM and does the stop itself (every node, the job's marker only), and
this waits for state.json to say so. When it is gone (machine rebooted, killed), the stop
is done from here: connect to every node and stop the job's marker there.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.cluster import Cluster
from launcher.errors import LauncherError
from launcher.job import node_process as proc
from launcher.job.launch import LaunchRequest
from launcher.job.reconnect import connect_options, nodes_of
from launcher.job.store import JobDir, JobState, supervisor_alive
from launcher.job.torchrun import RECIPE_PROGRAM, node_marker
from launcher.transport.fanout import NodePool


@dataclass(frozen=True)
class StopOutcome:
    state: JobState
    #: "supervisor": the job's supervisor stopped it; "direct": stopped from here;
    #: "already": it had already ended.
    how: str
    #: Per node: processes KILLed after the grace period (direct stops only).
    killed: tuple[tuple[str, tuple[int, ...]], ...] = ()


def stop_job(job: JobDir, *, grace_s: float | None = None, wait_s: float = 120.0) -> StopOutcome:
    state = job.read_state()
    if state.final:
        left = [n.name for n in state.nodes if n.status == "unreachable"]
        if not left:
            return StopOutcome(state, "already")
        return _stop_directly(job, state, grace_s, only=left)
    if supervisor_alive(state) and state.supervisor_pid is not None:
        os.kill(state.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s + (grace_s or state.launch.grace_s)
        while time.monotonic() < deadline:
            state = job.read_state()
            if state.final:
                return StopOutcome(state, "supervisor")
            if not supervisor_alive(state):
                break
            time.sleep(0.1)
        else:
            raise LauncherError(
                f"job {state.id}: its supervisor (pid {state.supervisor_pid}) did not stop the "
                f"job within {wait_s:g} s"
            )
    return _stop_directly(job, job.read_state(), grace_s)


def _stop_directly(
    job: JobDir, state: JobState, grace_s: float | None, only: list[str] | None = None
) -> StopOutcome:
    """Stop the job's processes from here (on `only` those nodes): its supervisor is gone,
    or could not reach them."""
    grace = state.launch.grace_s if grace_s is None else grace_s
    nodes = {n.name: n for n in state.nodes if only is None or n.name in only}
    cluster = Cluster(tuple(n for n in nodes_of(state) if n.name in nodes), "job state")
    with NodePool(cluster, connect_options(state)) as pool:
        if pool.failures:
            names = ", ".join(str(f.error) for f in pool.failures)
            raise LauncherError(f"job {state.id}: cannot reach every node to stop it: {names}")
        results = pool.map(
            lambda t: proc.stop_marker(
                t,
                node_marker(state.marker, nodes[t.node.name].node_rank),
                pgid=nodes[t.node.name].pgid or 0,
                grace_s=grace,
            )
        )
    errors = [f"{r.node.name}: {r.error}" for r in results if r.error is not None]
    if errors:
        raise LauncherError(f"job {state.id}: stop failed on " + "; ".join(errors))
    stopped = tuple(
        dataclasses.replace(n, status="stopped") if n.name in nodes else n for n in state.nodes
    )
    if state.final:  # a failed job's leftovers on nodes that were unreachable: now gone
        names = ", ".join(nodes)
        state = dataclasses.replace(
            state, nodes=stopped, message=f"stopped on {names} by `tuneboard stop`"
        )
    else:
        state = dataclasses.replace(
            state,
            status="stopped",
            ended_at=time.time(),
            message="stopped by `tuneboard stop` (its supervisor was gone)",
            nodes=stopped,
        )
    job.write_state(state)
    killed = tuple((r.node.name, r.value.killed) for r in results if r.value is not None)
    return StopOutcome(state, "direct", killed)


def resume_request(job: JobDir, state: JobState, state_root: Path | None) -> LaunchRequest:
    """The launch that continues `job` from its latest checkpoint (training.resume=auto)."""
    launch = state.launch
    overrides = tuple(o for o in launch.overrides if not o.startswith("training.resume="))
    base = connect_options(state)
    return LaunchRequest(
        recipe_path=job.path / state.recipe_file,
        overrides=(*overrides, "training.resume=auto"),
        hostfile=Path(launch.hostfile) if launch.hostfile else None,
        master_addr=launch.master_addr,
        master_port=launch.master_port,
        nproc_per_node=launch.nproc_per_node,
        cpu=launch.cpu,
        force=launch.force,
        grace_s=launch.grace_s,
        node_timeout_s=launch.node_timeout_s,
        cwd=Path(launch.cwd),
        program=launch.program or RECIPE_PROGRAM,
        connect=base,
        state_root=state_root,
        resumed_from=state.id,
    )


def live_status(state: JobState) -> str:
    """The status to show: "lost" for a job not ended whose supervisor is gone (the
    launching machine rebooted, the launcher was killed): it may still run on the nodes."""
    if state.final or supervisor_alive(state):
        return state.status
    return "lost"
