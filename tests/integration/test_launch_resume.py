"""`tuneboard resume` for real: a job dies after writing a checkpoint, and its resume
trains on from that checkpoint to the end (the real recipe, HF Trainer's resume).

Two loopback sshd nodes with separate workdirs (no shared filesystem: each node must keep
its own checkpoints, or the resume's preflight refuses), one rank each, the tiny LoRA
recipe (~30 ms a step with one thread; two threads on two busy cores make it ~2 s): the
smallest run that still goes through launch, checkpoint, failure, the resume's preflight
and the Trainer's own step counter. Rank 0 is killed as soon as the first checkpoint is
complete on both nodes, with ~190 steps to go.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from launcher.job.store import list_job_dirs
from tests.integration.launch_helpers import (
    job_pids,
    rank_pid,
    state_home,
    tb,
    tiny_recipe,
    tuneboard_home,
    wait_for,
)
from tests.support.sshd import SshdCluster

pytestmark = pytest.mark.integration
__all__ = ["state_home"]  # the fixture, used by name

MAX_STEPS = 200  # ~190 steps (several seconds) left when the rank dies: a stall cannot finish it
SAVE_STEPS = 10


def train_steps(metrics: Path) -> list[int]:
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [m["step"] for m in lines if m["event"] == "train"]


def latest_checkpoint(output: Path) -> int:
    """As the Trainer's resume and the preflight see it: complete checkpoints only."""
    return max(
        int(p.name.removeprefix("checkpoint-"))
        for p in output.glob("checkpoint-*")
        if (p / "trainer_state.json").is_file()
    )


def test_resume_trains_on_from_the_checkpoint_of_a_failed_job(
    sshd_cluster: SshdCluster, state_home: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    workdir = tmp_path / "node0"
    recipe = tiny_recipe(
        sshd_cluster,
        project,
        nodes=2,
        workdir=str(tmp_path / "node{node_rank}"),
        training={"max_steps": MAX_STEPS, "save_steps": SAVE_STEPS, "logging_steps": 1},
        env={"OMP_NUM_THREADS": "1"},
    )
    ssh = ["--known-hosts", str(sshd_cluster.known_hosts)]
    r = tb(
        "launch",
        str(recipe),
        "--cpu",
        "--nproc-per-node",
        "1",
        "--grace",
        "1",
        "--detach",
        *ssh,
        state=state_home,
        cwd=project,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    [first] = list_job_dirs(tuneboard_home(state_home))
    marker = first.read_state().marker
    output = workdir / "runs" / "tiny-sft-lora"
    outputs = [tmp_path / f"node{i}" / "runs" / "tiny-sft-lora" for i in range(2)]

    # The first checkpoint is complete on both nodes (the Trainer writes trainer_state.json
    # last): rank 0 dies, as under the OOM killer, long before the last step.
    wait_for(
        lambda: all(
            (o / f"checkpoint-{SAVE_STEPS}" / "trainer_state.json").is_file() for o in outputs
        ),
        180,
        "the first checkpoint on both nodes",
    )
    pid = rank_pid(marker, 0)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: first.read_state().final, 60, "the job to end")
    failed = first.read_state()
    assert failed.status == "failed", failed
    assert job_pids(marker) == []
    checkpoint = latest_checkpoint(output)
    assert SAVE_STEPS <= checkpoint < MAX_STEPS
    assert latest_checkpoint(outputs[1]) == checkpoint  # node 1 kept its own copy
    before = train_steps(first.metrics)
    assert before and before[-1] < MAX_STEPS  # it did not get to the end

    r = tb("resume", failed.id, state=state_home, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert f"resume     ✓ step {checkpoint}" in r.stdout  # the preflight saw the checkpoint
    [resumed] = [j for j in list_job_dirs(tuneboard_home(state_home)) if j.id != failed.id]
    state = resumed.read_state()
    assert state.status == "succeeded" and state.resumed_from == failed.id
    # The step counter goes on from the checkpoint's, not from 0, up to max_steps.
    assert train_steps(resumed.metrics) == list(range(checkpoint + 1, MAX_STEPS + 1))
    assert state.progress is not None and state.progress.step == MAX_STEPS
    assert f"resuming from {output.relative_to(workdir)}/checkpoint-{checkpoint}" in (
        resumed.combined_log.read_text()
    )
    node_metrics = workdir / "runs" / "tiny-sft-lora" / "metrics.jsonl"
    assert train_steps(node_metrics)[-MAX_STEPS + checkpoint :] == train_steps(resumed.metrics)
    assert job_pids(state.marker) == []
    print(f"killed at step {before[-1]}; resumed from checkpoint-{checkpoint} to {MAX_STEPS}")
