"""When gradients exist during forward (planner/memory/breakdown.py): DeepSpeed's ZeRO
gradient partitions are buffers made at start-up, so always; FSDP2's sharded `.grad`
and plain data parallel's gradients are freed by the Trainer's `zero_grad()` after each
step, so only when gradient accumulation keeps them between micro-batches."""

from __future__ import annotations

from planner.memory.breakdown import MemoryBreakdown, estimate_memory
from planner.models import resolve_model
from planner.setups import Fsdp, Setup
from tests.support.specs import cluster_of

SPEC = resolve_model("7b")
GPUS = 8


def _plan(zero: int | None, fsdp: Fsdp | None, global_batch: int | None) -> MemoryBreakdown:
    setup = Setup(
        method="full",
        precision="bf16-mixed",
        optimizer="adamw",
        zero_stage=zero,
        fsdp=fsdp,
        offload_optimizer="none",
        offload_params="none",
        gradient_checkpointing=True,
        micro_batch_size=1,
        seq_len=8192,  # long sequences: the peak is in forward/backward
        global_batch_size=global_batch,
    )
    return estimate_memory(SPEC, cluster_of(GPUS), setup)


def test_fsdp_without_accumulation_holds_no_gradient_in_forward() -> None:
    accumulating = _plan(None, "full", 4 * GPUS)
    one_step = _plan(None, "full", GPUS)
    assert accumulating.gradient_accumulation_steps == 4
    assert one_step.gradient_accumulation_steps == 1
    assert one_step.peak_phase == accumulating.peak_phase == "forward-backward"
    assert accumulating.gradients_bytes > 0
    assert accumulating.total_bytes - one_step.total_bytes == accumulating.gradients_bytes
    # no --global-batch: accumulation assumed, never lower
    assert _plan(None, "full", None).total_bytes == accumulating.total_bytes


def test_deepspeed_partitions_exist_in_forward_either_way() -> None:
    for stage in (2, 3):
        assert _plan(stage, None, GPUS).total_bytes == _plan(stage, None, 4 * GPUS).total_bytes
