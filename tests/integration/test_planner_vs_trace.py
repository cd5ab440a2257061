"""The analytic estimate against the tensor-level peak of a real training step of the
same HF model, traced on fake tensors (planner/fake_trace.py): totals and activations
within 5%, and never more than 5% under.

The trace runs "pure" training on one GPU (no DeepSpeed, gradient accumulation 1,
torch AdamW), so the plan is asked for exactly that: bf16-pure or fp32, ZeRO-0 on
one GPU, --global-batch = --micro-batch. Framework overhead and fragmentation,
which a trace cannot see, are left out of the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from planner.hf_config import spec_from_hf_config
from planner.memory.activations import activation_estimate
from planner.memory.breakdown import estimate_memory
from planner.setups import Attention, Method, Optimizer, Setup
from planner.trace_plan import TRACE_OPTIMIZER
from tests.support.specs import cluster_of

pytestmark = pytest.mark.integration
pytest.importorskip("torch")
pytest.importorskip("transformers")
trace_mod = pytest.importorskip("planner.fake_trace")

LLAMA = {
    "model_type": "llama",
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 4,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}


@dataclass(frozen=True)
class Case:
    name: str
    config: dict[str, Any]
    method: Method = "full"
    dtype: str = "bf16"
    ckpt: bool = False
    attention: Attention = "sdpa"
    seq_len: int = 1024
    micro_batch: int = 2
    lora_dropout: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("llama full", LLAMA),
    Case("llama full ckpt", LLAMA, ckpt=True),
    Case("llama full eager", LLAMA, attention="eager"),
    Case("llama GQA", {**LLAMA, "num_key_value_heads": 4}),
    Case("llama full fp32", LLAMA, dtype="fp32"),
    Case("llama small vocab", {**LLAMA, "vocab_size": 512}),
    Case("llama lora", LLAMA, method="lora"),
    Case("llama lora dropout", LLAMA, method="lora", lora_dropout=0.05),
    Case("llama lora ckpt", LLAMA, method="lora", ckpt=True),
    Case("llama dora", LLAMA, method="dora", ckpt=True),
    Case("llama freeze", LLAMA, method="freeze"),
    Case(
        "qwen2 tied GQA bias",
        {
            "model_type": "qwen2",
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 4,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "vocab_size": 20000,
            "tie_word_embeddings": True,
        },
    ),
    Case(
        "opt relu dropout",
        {
            "model_type": "opt",
            "hidden_size": 1024,
            "ffn_dim": 4096,
            "num_hidden_layers": 4,
            "num_attention_heads": 16,
            "vocab_size": 20000,
            "word_embed_proj_dim": 1024,
            "max_position_embeddings": 2048,
            "dropout": 0.1,
        },
    ),
    Case(
        "mixtral moe",
        {
            "model_type": "mixtral",
            "hidden_size": 512,
            "intermediate_size": 1024,
            "num_hidden_layers": 2,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "vocab_size": 8000,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
        },
    ),
]


def _setup(case: Case) -> Setup:
    return Setup(
        method=case.method,
        precision="bf16-pure" if case.dtype == "bf16" else "fp32",
        optimizer="adamw-single",  # the trace's default: torch's single-tensor AdamW
        zero_stage=0,
        fsdp=None,
        offload_optimizer="none",
        offload_params="none",
        gradient_checkpointing=case.ckpt,
        micro_batch_size=case.micro_batch,
        seq_len=case.seq_len,
        global_batch_size=case.micro_batch,
        attention=case.attention,
        lora_rank=8,
        lora_dropout=case.lora_dropout,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_analytic_matches_trace(case: Case) -> None:
    spec = spec_from_hf_config(case.config, name=case.name, source="config")
    setup = _setup(case)
    mem = estimate_memory(spec, cluster_of(1), setup)
    acts = activation_estimate(spec, setup)
    trace = trace_mod.trace_training_step(
        case.config,
        method=case.method,
        dtype=case.dtype,
        seq_len=case.seq_len,
        micro_batch=case.micro_batch,
        gradient_checkpointing=case.ckpt,
        attn_implementation=case.attention,
        lora_rank=8,
        lora_dropout=case.lora_dropout,
    )
    # Model states are exact.
    assert mem.weights_bytes == pytest.approx(trace.weights_bytes, rel=0.001)
    assert mem.gradients_bytes == pytest.approx(trace.gradients_bytes, rel=0.001)
    assert mem.optimizer_bytes == pytest.approx(trace.optimizer_bytes, rel=0.01)

    # Totals: the tensor peak (no CUDA context, no fragmentation).
    ours_total = mem.total_bytes - mem.framework_overhead_bytes - mem.fragmentation_bytes
    assert ours_total == pytest.approx(trace.peak_bytes, rel=0.05)

    # Activations: what forward and backward add on top of weights and optimizer
    # states (saved activations + the logits/loss peak).
    trace_dynamic = max(trace.phase_peak_bytes["forward"], trace.phase_peak_bytes["backward"])
    trace_dynamic -= trace.weights_bytes + trace.optimizer_bytes
    ours_dynamic = acts.activations_bytes + acts.logits_bytes - acts.overlap_bytes
    assert ours_dynamic == pytest.approx(trace_dynamic, rel=0.05)


STEP_CASES: list[tuple[str, Optimizer]] = [
    ("bf16", "adamw"),
    ("bf16", "adamw-foreach"),
    ("bf16", "adamw-single"),
    ("bf16", "sgd"),
    ("fp32", "adamw-foreach"),
]


@pytest.mark.parametrize(("dtype", "optimizer"), STEP_CASES)
def test_optimizer_step_matches_trace_per_implementation(dtype: str, optimizer: Optimizer) -> None:
    """A full fine-tune with short sequences peaks at the optimizer step, where the
    implementation decides the transient (planner/memory/optimizer_step.py): fused none,
    foreach +1x the states' v, single-tensor 2x the largest tensor, SGD no state at all.
    The trace runs the same torch implementation on fake tensors."""
    case = Case("step", LLAMA, dtype=dtype, seq_len=128, micro_batch=1)
    spec = spec_from_hf_config(case.config, name=case.name, source="config")
    setup = replace(_setup(case), optimizer=optimizer)
    mem = estimate_memory(spec, cluster_of(1), setup)
    trace = trace_mod.trace_training_step(
        case.config,
        method="full",
        dtype=dtype,
        seq_len=case.seq_len,
        micro_batch=case.micro_batch,
        optimizer=TRACE_OPTIMIZER[optimizer],
    )
    assert mem.peak_phase == "optimizer-step"
    ours = mem.total_bytes - mem.framework_overhead_bytes - mem.fragmentation_bytes
    assert ours == pytest.approx(trace.phase_peak_bytes["optimizer"], rel=0.01)
    assert mem.optimizer_bytes == pytest.approx(trace.optimizer_bytes, rel=0.01)


#: Small vocabulary: the logits do not hide what the layers save.
SMALL_VOCAB = {**LLAMA, "num_key_value_heads": 4, "vocab_size": 2000}
ADAPTER_CASES = [
    (method, precision, ckpt, dropout)
    for method in ("lora", "qlora")
    for precision in ("bf16-pure", "bf16-mixed")
    for ckpt in (False, True)
    for dropout in (0.0, 0.05)
]


@pytest.mark.parametrize(("method", "precision", "ckpt", "dropout"), ADAPTER_CASES)
def test_adapter_activations_match_a_trace_as_the_trainer_runs_them(
    method: str, precision: str, ckpt: bool, dropout: float
) -> None:
    """LoRA and QLoRA, pure and under autocast (bf16-mixed, as the Trainer runs it), with
    and without checkpointing and dropout, on a small vocabulary so that the logits do not
    hide the layers: never more than 5% under, at most 6% over. QLoRA's fp32 residual
    stream is traced on planner/qlora_emulation.py; planned as LoRA on 16-bit activations
    it was 13-34% under, and LoRA with checkpointing was 8-22% under before the adapters'
    backward term (planner/memory/activations.py, adapter_backward_bytes)."""
    case = Case(method, SMALL_VOCAB, method="lora", ckpt=ckpt, lora_dropout=dropout)
    spec = spec_from_hf_config(case.config, name=case.name, source="config")
    setup = replace(_setup(case), method=method, precision=precision)  # type: ignore[arg-type]
    acts = activation_estimate(spec, setup)
    trace = trace_mod.trace_training_step(
        case.config,
        method="lora",
        dtype="bf16",
        seq_len=case.seq_len,
        micro_batch=case.micro_batch,
        gradient_checkpointing=ckpt,
        lora_rank=8,
        lora_dropout=dropout,
        qlora=method == "qlora",
        autocast=precision == "bf16-mixed",
        optimizer="adamw_fused",
        warm_start=True,
    )
    trace_dynamic = max(trace.phase_peak_bytes["forward"], trace.phase_peak_bytes["backward"])
    trace_dynamic -= trace.weights_bytes + trace.optimizer_bytes
    ours = acts.activations_bytes + acts.logits_bytes - acts.overlap_bytes
    assert -0.05 <= ours / trace_dynamic - 1 <= 0.06, (ours, trace_dynamic)
    if method == "qlora":
        lora = activation_estimate(spec, replace(setup, method="lora"))
        assert ours > lora.activations_bytes + lora.logits_bytes - lora.overlap_bytes
