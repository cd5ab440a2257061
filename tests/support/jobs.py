"""A launcher job directory with a complete, valid state.json, without launching anything:
for the tests of `tuneboard jobs/status/logs` and of the dashboard reading a job."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from launcher.job.store import JobDir, JobState, LaunchRecord, NodeState, Progress


def make_state(job_id: str, created_at: float, **changes: object) -> JobState:
    launch = LaunchRecord(
        recipe_source="/r.yaml",
        cwd="/",
        overrides=(),
        hostfile=None,
        master_addr=None,
        master_port=None,
        nproc_per_node=None,
        cpu=True,
        force=False,
        grace_s=10.0,
        node_timeout_s=60.0,
        program=("-m", "recipes.run"),
        known_hosts="/kh",
        ssh_config=None,
        identity_files=(),
        user=None,
        use_agent=True,
        look_for_keys=True,
        connect_timeout_s=10.0,
    )
    nodes = tuple(
        NodeState(
            f"node{i}",
            f"10.0.0.{i + 1}",
            None,
            None,
            None,
            f"node{i}",
            False,
            i,
            2,
            "~/tuneboard",
            "eth0",
            "exited",
            100 + i,
            0,
        )
        for i in range(2)
    )
    state = JobState(
        id=job_id,
        name="tiny",
        marker=f"tb-{job_id}",
        status="succeeded",
        recipe_file="r.yaml",
        created_at=created_at,
        launch=launch,
        master_addr="10.0.0.1",
        master_port=29500,
        python="python3",
        env=(("NCCL_DEBUG", "WARN"),),
        secret_names=("HF_TOKEN",),
        shared_fs=False,
        metrics_path="tuneboard/runs/x/metrics.jsonl",
        nodes=nodes,
        progress=Progress(step=40, total_steps=40, loss=1.25, tokens_per_s=2500.0, eta_s=0.0),
    )
    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]


def add_job(root: Path, job_id: str, created_at: float, **changes: object) -> JobDir:
    job = JobDir.create(job_id, root)
    job.write_state(make_state(job_id, created_at, **changes))
    return job
