"""The optimizer step's transient and states, per implementation (planner/memory/
optimizer_step.py): each number below is worked out by hand from the cited source lines.
The ZeRO-0 cases are also checked against fake-tensor traces of the real torch
optimizers (tests/integration/test_planner_vs_trace.py)."""

from __future__ import annotations

import pytest

from planner.memory.model_states import model_states, parallelism
from planner.memory.optimizer_step import ZERO3_SUB_GROUP_ELEMENTS, step_transient_bytes
from planner.setups import OPTIMIZER_IMPLEMENTATIONS, OPTIMIZERS, Optimizer, Precision, Setup
from tests.support.specs import cluster_of, synthetic_spec

PSI = 7_000_000_000
SPEC = synthetic_spec(PSI)
HEAD = 32000 * 4096  # synthetic_spec's lm_head (and embedding)


def _setup(
    optimizer: Optimizer,
    zero: int = 0,
    precision: Precision = "bf16-pure",
    offload: bool = False,
) -> Setup:
    return Setup(
        method="full",
        precision=precision,
        optimizer=optimizer,
        zero_stage=zero,
        fsdp=None,
        offload_optimizer="cpu" if offload else "none",
        offload_params="none",
        gradient_checkpointing=True,
        micro_batch_size=1,
        seq_len=2048,
    )


def _step(setup: Setup, gpus: int = 1) -> int:
    cluster = cluster_of(gpus)
    return step_transient_bytes(
        SPEC, setup, model_states(SPEC, cluster, setup), parallelism(cluster, setup)
    )


def test_every_optimizer_names_its_implementation() -> None:
    assert set(OPTIMIZER_IMPLEMENTATIONS) == set(OPTIMIZERS)


def test_unsharded_step_per_implementation() -> None:
    # bf16-pure: states in bf16 (2 bytes), as torch keeps them in the parameter dtype
    assert _step(_setup("adamw")) == 0  # torch._fused_adamw_: in place
    assert _step(_setup("adamw-foreach")) == PSI * 2  # _foreach_sqrt of every exp_avg_sq
    assert _step(_setup("adamw-single")) == 2 * HEAD * 2  # sqrt + div of the largest tensor
    assert _step(_setup("adamw-8bit")) == 0
    assert _step(_setup("sgd")) == 0
    # Adafactor on 16-bit weights: grad and param upcast + two fp32 updates, 16 B/element
    assert _step(_setup("adafactor")) == HEAD * 16
    assert _step(_setup("adafactor", precision="fp32")) == HEAD * 8


def test_zero_steps_one_flat_partition() -> None:
    # ZeRO-1/2 give the optimizer one flat fp32 partition (bf16-mixed: fp32 states)
    part = PSI / 8
    assert _step(_setup("adamw", 2, "bf16-mixed"), 8) == 0
    assert _step(_setup("adamw-foreach", 2, "bf16-mixed"), 8) == pytest.approx(part * 4)
    assert _step(_setup("adamw-single", 1, "bf16-mixed"), 8) == pytest.approx(2 * part * 4)
    # ZeRO-3 steps sub-groups of at most sub_group_size elements
    one_gpu = _step(_setup("adamw-single", 3, "bf16-mixed"), 1)
    assert one_gpu == pytest.approx(2 * ZERO3_SUB_GROUP_ELEMENTS * 4)
    assert _step(_setup("adamw-single", 3, "bf16-mixed"), 64) == pytest.approx(2 * PSI / 64 * 4)


def test_an_offloaded_optimizer_steps_on_the_cpu() -> None:
    for optimizer in ("adamw-foreach", "adamw-single", "adafactor"):
        assert _step(_setup(optimizer, 2, "bf16-mixed", offload=True), 8) == 0


def test_state_bytes_follow_the_implementation() -> None:
    cluster = cluster_of(8)

    def opt_bytes(setup: Setup) -> int:
        return model_states(SPEC, cluster, setup).optimizer_bytes

    # every AdamW keeps m and v; SGD as transformers runs it (no momentum) keeps nothing
    adamw = opt_bytes(_setup("adamw"))
    assert adamw == PSI * 2 * 2
    assert opt_bytes(_setup("adamw-foreach")) == opt_bytes(_setup("adamw-single")) == adamw
    assert opt_bytes(_setup("sgd")) == 0
    # Adafactor: fp32 states whatever the weights; factored (rows + cols) on matrices, but
    # under ZeRO the optimizer sees a flat 1-D partition: a full v, 4 bytes + the master
    assert opt_bytes(_setup("adafactor")) < PSI * 4 / 100
    zero2 = opt_bytes(_setup("adafactor", 2, "bf16-mixed"))
    assert zero2 == pytest.approx(PSI * (4 + 4) / 8, rel=1e-6)
