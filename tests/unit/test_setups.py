"""Enumeration of setups and the validation of impossible combinations."""

from __future__ import annotations

import pytest

from planner.cluster_spec import build_cluster
from planner.errors import PlannerInputError
from planner.models import resolve_model
from planner.search import make_plan
from planner.setups import Constraints, enumerate_setups


def test_pinning_every_dimension_yields_one_candidate() -> None:
    spec = resolve_model("llama-2-7b")
    cluster = build_cluster("8xA800")
    c = Constraints(
        method="lora",
        precision="bf16-mixed",
        optimizer="adamw",
        zero_stage=2,
        offload_optimizer="none",
        gradient_checkpointing=True,
        micro_batch_size=4,
    )
    setups = enumerate_setups(c, spec, cluster)
    assert len(setups) == 1
    only = setups[0]
    assert (only.method, only.zero_stage, only.micro_batch_size) == ("lora", 2, 4)
    assert only.gradient_checkpointing


def test_open_dimensions_are_enumerated() -> None:
    spec = resolve_model("llama-2-7b")
    cluster = build_cluster("8xA800")
    setups = enumerate_setups(Constraints(method="full"), spec, cluster)
    stages = {s.zero_stage for s in setups}
    assert stages == {0, 1, 2, 3}
    assert {s.micro_batch_size for s in setups} == {1, 2, 4, 8, 16}
    assert any(s.offload_params == "cpu" for s in setups)
    assert all(s.offload_params == "none" for s in setups if s.zero_stage != 3)
    assert len({s for s in setups}) == len(setups)


def test_fsdp_pins_replace_zero() -> None:
    spec = resolve_model("llama-2-7b")
    cluster = build_cluster("2x8xA800")
    setups = enumerate_setups(Constraints(method="full", fsdp="hybrid"), spec, cluster)
    assert {s.fsdp for s in setups} == {"hybrid"}
    assert {s.zero_stage for s in setups} == {None}


@pytest.mark.parametrize(
    ("model", "gpus", "constraints", "needle"),
    [
        ("opt-66b", "24xA800", Constraints(pp=24), "--pp 24 does not divide opt-66b's 64 layers"),
        ("llama-2-7b", "8xA800", Constraints(zero_stage=2, offload_params="cpu"), "needs ZeRO-3"),
        (
            "llama-2-7b",
            "8xA800",
            Constraints(zero_stage=0, offload_optimizer="cpu"),
            "ZeRO-1, 2 or 3",
        ),
        (
            "llama-2-7b",
            "8xA800",
            Constraints(micro_batch_size=-1),
            "--micro-batch must be a positive integer, got -1",
        ),
        (
            "llama-2-7b",
            "8xA800",
            Constraints(seq_len=0),
            "--seq-len must be a positive integer, got 0",
        ),
        ("llama-2-7b", "8xA800", Constraints(zero_stage=2, fsdp="full"), "pick one"),
        ("llama-2-7b", "8xA800", Constraints(zero_stage=5), "--zero must be one of"),
        ("llama-2-7b", "8xA800", Constraints(tp=3), "--tp 3 must divide"),
        ("llama-2-7b", "8xV100", Constraints(precision="bf16-mixed"), "no bf16"),
        ("llama-2-7b", "8xA800", Constraints(global_batch_size=12, micro_batch_size=1), "multiple"),
        ("llama-2-7b", "8xA800", Constraints(method="lora", lora_targets="qq_proj"), "qq_proj"),
    ],
)
def test_impossible_combinations(
    model: str, gpus: str, constraints: Constraints, needle: str
) -> None:
    with pytest.raises(PlannerInputError) as err:
        make_plan(resolve_model(model), build_cluster(gpus), constraints)
    assert needle in str(err.value)


def test_pp_that_divides_is_accepted() -> None:
    plan = make_plan(
        resolve_model("opt-66b"), build_cluster("24xA800"), Constraints(pp=8, method="full")
    )
    assert all(c.setup.pp == 8 for c in plan.candidates)


def test_the_recommendation_keeps_headroom_when_a_setup_as_fast_does() -> None:
    """Llama-3.1-70B QLoRA on 8 A800s: ZeRO-0 fits at 99% of usable memory, ZeRO-2 is
    as fast at under 90%; the plan recommends ZeRO-2 and says why."""
    spec = resolve_model("llama-3.1-70b")
    cluster = build_cluster("8xA800")
    plan = make_plan(spec, cluster, Constraints(method="qlora", seq_len=4096, lora_rank=64))
    first = next(c for c in plan.candidates if c.fits)
    rec = plan.recommendation
    assert rec is not None and rec is not first
    assert first.memory.total_bytes > 0.9 * first.memory.usable_bytes
    assert rec.memory.total_bytes <= 0.9 * rec.memory.usable_bytes
    assert rec.time.tokens_per_s >= 0.97 * first.time.tokens_per_s
    assert any("no room to spare" in note for note in plan.notes)
    # with room to spare, the first that fits is the recommendation
    roomy = make_plan(spec, build_cluster("8xH200"), Constraints(method="qlora", seq_len=4096))
    assert roomy.recommendation is next(c for c in roomy.candidates if c.fits)
