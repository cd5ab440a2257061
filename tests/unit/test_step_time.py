"""The time model's parts that do not hide behind compute (planner/timing.py): the
memory-bound optimizer step, which ZeRO-1+ shards and a bigger micro-batch amortises,
and the per-collective latency of ZeRO-3's layer-by-layer gathers."""

from __future__ import annotations

import pytest

from planner.models import resolve_model
from planner.setups import Optimizer, Setup
from planner.timing import HBM_EFFICIENCY, TimeEstimate, estimate_time
from tests.support.specs import cluster_of

SPEC = resolve_model("llama-2-7b")
CLUSTER = cluster_of(8, gpu="H100")


def _time(zero: int, mb: int = 1, optimizer: Optimizer = "adamw") -> TimeEstimate:
    setup = Setup(
        method="full",
        precision="bf16-mixed",
        optimizer=optimizer,
        zero_stage=zero,
        fsdp=None,
        offload_optimizer="none",
        offload_params="none",
        gradient_checkpointing=True,
        micro_batch_size=mb,
        seq_len=2048,
    )
    return estimate_time(SPEC, CLUSTER, setup)


def test_the_fused_step_moves_each_parameter_through_hbm_once() -> None:
    # fp32 master, m, v (4 B each), fp32 gradient: read w, g, m, v + write w, m, v = 28 B,
    # the master -> bf16 copy 6 B, clipping's norm reads the bf16 gradient 2 B
    per_param = 2 * 4 + 4 + 4 * 4 + (4 + 2) + 2
    expected = SPEC.params_total * per_param / (CLUSTER.gpu.hbm_bytes_per_s * HBM_EFFICIENCY)
    assert _time(0).optimizer_s == pytest.approx(expected)
    assert _time(1).optimizer_s == pytest.approx(expected / 8)  # ZeRO-1 shards the states
    assert _time(0, optimizer="adamw-foreach").optimizer_s > 2 * _time(0).optimizer_s


def test_stages_and_micro_batches_no_longer_tie() -> None:
    z0, z1, z3 = _time(0), _time(1), _time(3)
    assert z1.tokens_per_s > z3.tokens_per_s > z0.tokens_per_s
    assert z3.communication_s > z1.communication_s  # one collective per layer per pass
    assert _time(1, mb=4).tokens_per_s > z1.tokens_per_s  # the step is amortised
