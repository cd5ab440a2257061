"""The plan as plain data: the documented, stable `--json` schema (docs/plan-json.md).

Bump SCHEMA_VERSION on any change that removes or renames a key; adding keys is
allowed within a version.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from planner.search import Candidate, Plan
from planner.setups import OPTIMIZER_IMPLEMENTATIONS

if TYPE_CHECKING:
    from planner.trace_plan import TraceSummary

SCHEMA_VERSION = 1


def candidate_to_dict(
    c: Candidate, train_tokens: float | None = None, trace: TraceSummary | None = None
) -> dict[str, Any]:
    m, t = c.memory, c.time
    setup = asdict(c.setup)
    return {
        "setup": setup,
        "label": c.setup.label(),
        "optimizer_implementation": OPTIMIZER_IMPLEMENTATIONS[c.setup.optimizer],
        "per_gpu_bytes": {
            "weights": m.weights_bytes,
            "gradients": m.gradients_bytes,
            "optimizer": m.optimizer_bytes,
            "activations": m.activations_bytes,
            "logits": m.logits_bytes,
            "buffers": m.buffers_bytes,
            "framework_overhead": m.framework_overhead_bytes,
            "fragmentation": m.fragmentation_bytes,
            "total": m.total_bytes,
        },
        "peak_phase": m.peak_phase,
        "usable_gpu_bytes": m.usable_bytes,
        "per_node_cpu_bytes": m.host.cpu_bytes,
        "per_node_loading_cpu_bytes": m.host.loading_cpu_bytes,
        "per_node_nvme_bytes": m.host.nvme_bytes,
        "usable_node_cpu_bytes": m.usable_host_bytes,
        "trainable_params": m.trainable_params,
        "gradient_accumulation_steps": m.gradient_accumulation_steps,
        "fits": c.fits,
        "step_time_s": t.step_time_s,
        "tokens_per_s": t.tokens_per_s,
        "tokens_per_step": t.tokens_per_step,
        "time": {
            "flops_per_token": t.flops_per_token,
            "compute_s": t.compute_s,
            "communication_s": t.communication_s,
            "optimizer_s": t.optimizer_s,
            "offload_s": t.offload_s,
            "mfu": t.mfu,
        },
        "train_time_s": (train_tokens / t.tokens_per_s)
        if train_tokens and t.tokens_per_s
        else None,
        "notes": list(c.notes),
        "source": c.source,
        "trace": None
        if trace is None
        else {
            "phase_peak_bytes": dict(trace.phase_peak_bytes),
            "weights_bytes": trace.weights_bytes,
            "gradients_bytes": trace.gradients_bytes,
            "optimizer_bytes": trace.optimizer_bytes,
            "dynamic_bytes": trace.dynamic_bytes,
            "elapsed_s": trace.elapsed_s,
            "stand_in": trace.stand_in,
        },
    }


def plan_to_dict(
    plan: Plan,
    train_tokens: float | None = None,
    traces: dict[int, TraceSummary] | None = None,
) -> dict[str, Any]:
    spec, cl = plan.model, plan.cluster
    traces = traces or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "source": "trace" if traces else "analytic",
        "model": {
            "name": spec.name,
            "params": spec.params_total,
            "params_active": spec.params_active,
            "source": spec.source,
            "model_type": spec.model_type,
            "hf_id": spec.hf_id,
            "num_layers": spec.num_layers,
            "hidden_size": spec.hidden_size,
            "vocab_size": spec.vocab_size,
            "num_experts": spec.num_experts,
            "note": spec.note,
        },
        "cluster": {
            "nodes": cl.nodes,
            "gpus_per_node": cl.gpus_per_node,
            "world_size": cl.world_size,
            "gpu": {
                "name": cl.gpu.name,
                "memory_bytes": cl.gpu.memory_bytes,
                "bf16_tflops": cl.gpu.bf16_tflops,
                "mfu": cl.gpu.mfu,
            },
            "node_ram_bytes": cl.node_ram_bytes,
            "inter_node_bytes_per_s": cl.inter_node_bytes_per_s,
            "nvme_bytes": cl.nvme_bytes,
            "source": cl.source,
            # this user's fitted constants (tuneboard plan --calibrate), or null: built-in
            "calibration": asdict(cl.calibration) if cl.calibration else None,
        },
        "train_tokens": train_tokens,
        "candidates": [
            candidate_to_dict(c, train_tokens, traces.get(i)) for i, c in enumerate(plan.candidates)
        ],
        "recommended": plan.recommended,
        "rejected": list(plan.rejected),
        "notes": list(plan.notes),
    }
