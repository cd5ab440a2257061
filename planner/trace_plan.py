"""`--trace`: measure a candidate's activations on fake tensors and combine them with
what a trace cannot see.

planner/fake_trace.py runs one unsharded data-parallel rank of the real HF model (its
forward, loss, backward and optimizer step) on fake tensors and reports the live
bytes per phase. Here that measurement replaces the analytic activations and
logits: the traced forward/backward peak minus the traced weights and optimizer
states is what a step adds on top of the model states. Everything else stays
analytic, because a trace of one rank cannot see it: the ZeRO/FSDP sharding of
the model states, communication buckets, the CUDA context, NCCL and allocator
fragmentation (planner/memory/). QLoRA is traced on a 16-bit stand-in that behaves
as the 4-bit model does, fp32 casts and residual stream included
(planner/qlora_emulation.py: bitsandbytes cannot run on fake tensors); its 4-bit
weights stay analytic. Adapter setups in mixed precision are traced under autocast, as
the Trainer runs them; full and freeze run pure (their 16-bit weights are DeepSpeed's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from planner.errors import PlannerInputError
from planner.layers import resolve_lora_targets
from planner.memory.breakdown import MemoryBreakdown, estimate_memory
from planner.memory.dtypes import LAYOUTS
from planner.search import Candidate, Plan, memory_fits, why_not
from planner.setups import Optimizer, Setup
from planner.specs import ClusterSpec, ModelSpec

#: At most this many distinct traces per plan (each takes seconds).
MAX_TRACES = 4


@dataclass(frozen=True)
class TraceSummary:
    """What the trace measured for one setup's shape, bytes on one unsharded rank."""

    phase_peak_bytes: dict[str, int]
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    dynamic_bytes: int  # forward/backward peak minus weights and optimizer states
    elapsed_s: float
    stand_in: str | None  # e.g. "QLoRA traced as LoRA on bf16 weights"


def trace_key(setup: Setup) -> tuple[Any, ...]:
    """Setups with the same key trace identically (sharding and offload do not matter)."""
    return (
        setup.method,
        setup.precision,
        setup.gradient_checkpointing,
        setup.micro_batch_size,
        setup.seq_len,
        setup.attention,
        setup.lora_rank,
        setup.lora_targets,
        setup.lora_dropout,
        setup.freeze_trainable_layers,
    )


#: The fake-tensor harness's name for each optimizer it can run (planner/fake_trace.py);
#: the others are traced as fused AdamW (the trace feeds forward/backward bytes only).
TRACE_OPTIMIZER: dict[Optimizer, str] = {
    "adamw": "adamw_fused",
    "adamw-foreach": "adamw_foreach",
    "adamw-single": "adamw",
    "sgd": "sgd",
}


def run_trace(spec: ModelSpec, config: Mapping[str, Any], setup: Setup) -> TraceSummary:
    """Trace `setup` on fake tensors. Raises PlannerInputError if the model cannot be traced."""
    if setup.tp > 1 or setup.pp > 1:
        raise PlannerInputError("--trace measures one data-parallel rank: not with --tp/--pp")
    if setup.fused_ce:
        raise PlannerInputError("--trace runs transformers' own loss: not with --fused-ce")
    try:
        from planner.fake_trace import trace_training_step
    except ImportError as exc:  # torch/transformers missing
        raise PlannerInputError(
            f"--trace needs torch, transformers and peft ({exc.name} is missing): "
            "pip install 'tuneboard[train]'"
        ) from None
    notes = []
    method = setup.method
    if method == "qlora":
        method = "lora"
        notes.append("QLoRA traced on 16-bit stand-ins of its 4-bit linears; weights analytic")
    optimizer = TRACE_OPTIMIZER.get(setup.optimizer)
    if optimizer is None:
        optimizer = "adamw_fused"
        notes.append(f"{setup.optimizer} traced as fused AdamW; its states analytic")
    stand_in = "; ".join(notes) or None
    dtype = {"fp32": "fp32", "fp16-mixed": "fp16"}.get(setup.precision, "bf16")
    attn = {"flash": "sdpa"}.get(setup.attention, setup.attention)
    if spec.model_type == "bloom":
        attn = "eager"
    targets: str | list[str] = setup.lora_targets
    if setup.is_adapter and setup.lora_targets.strip().lower() not in ("all-linear", "all"):
        targets = sorted({lin.name for lin in resolve_lora_targets(spec, setup.lora_targets)})
    try:
        result = trace_training_step(
            config,
            method=method,
            dtype=dtype,
            seq_len=setup.seq_len,
            micro_batch=setup.micro_batch_size,
            gradient_checkpointing=setup.gradient_checkpointing,
            attn_implementation=attn,
            lora_rank=setup.lora_rank,
            lora_alpha=2 * setup.lora_rank,
            lora_dropout=setup.lora_dropout,
            lora_targets=targets,
            freeze_trainable_layers=setup.freeze_trainable_layers,
            warm_start=True,
            optimizer=optimizer,
            qlora=setup.method == "qlora",
            autocast=setup.is_adapter and LAYOUTS[setup.precision].mixed,
        )
    except (ValueError, KeyError, TypeError, RuntimeError, NotImplementedError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PlannerInputError(
            f"--trace: cannot trace {spec.name} ({type(exc).__name__}: {first[:200]}); "
            "the analytic estimate stands"
        ) from None
    phases = dict(result.phase_peak_bytes)
    dynamic = max(phases.get("forward", 0), phases.get("backward", 0))
    dynamic -= result.weights_bytes + result.optimizer_bytes
    return TraceSummary(
        phase_peak_bytes=phases,
        weights_bytes=result.weights_bytes,
        gradients_bytes=result.gradients_bytes,
        optimizer_bytes=result.optimizer_bytes,
        dynamic_bytes=max(0, dynamic),
        elapsed_s=result.elapsed_s,
        stand_in=stand_in,
    )


def traced_memory(
    spec: ModelSpec, cluster: ClusterSpec, setup: Setup, trace: TraceSummary
) -> MemoryBreakdown:
    """The analytic breakdown with its activations + logits replaced by the trace's."""
    return estimate_memory(spec, cluster, setup, traced_dynamic_bytes=trace.dynamic_bytes)


def refine_with_traces(
    plan: Plan,
    config: Mapping[str, Any],
    *,
    max_traces: int = MAX_TRACES,
    progress: Callable[[str], None] | None = None,
) -> tuple[Plan, dict[int, TraceSummary]]:
    """Trace the recommendation; if its traced peak no longer fits, move down the
    ranking (re-using traces of the same shape) until a traced candidate fits or
    `max_traces` shapes were traced. Returns the new plan and the traces by index."""
    traces: dict[tuple[Any, ...], TraceSummary] = {}
    by_index: dict[int, TraceSummary] = {}
    candidates = list(plan.candidates)
    recommended: int | None = None
    rejected = list(plan.rejected)
    start = plan.recommended if plan.recommended is not None else 0
    for i in range(start, len(candidates)):
        c = candidates[i]
        if not c.fits:
            continue
        key = trace_key(c.setup)
        if key not in traces:
            if len(traces) >= max_traces:
                break
            if progress is not None:
                progress(f"tracing {plan.model.name}: {c.setup.label()} on fake tensors")
            traces[key] = run_trace(plan.model, config, c.setup)
        trace = traces[key]
        memory = traced_memory(plan.model, plan.cluster, c.setup, trace)
        fits = memory_fits(memory, plan.cluster)
        notes = c.notes + ((trace.stand_in,) if trace.stand_in else ())
        candidates[i] = Candidate(c.setup, memory, c.time, fits, notes, source="trace")
        by_index[i] = trace
        if fits:
            recommended = i
            break
        rejected.append(f"{c.setup.label()} (traced): {why_not(candidates[i], plan.cluster)}")
    notes = plan.notes
    if recommended is None and by_index:
        notes = (*notes, f"none of the {len(traces)} traced shapes fits; try a smaller setup")
    elif recommended is None:
        recommended = plan.recommended
    new_plan = replace(
        plan,
        candidates=tuple(candidates),
        recommended=recommended,
        rejected=tuple(rejected),
        notes=notes,
    )
    return new_plan, by_index
