"""Compose the terms into the per-GPU peak.

The peak of a training step is the larger of two moments (both checked against
fake-tensor traces of the real HF models, tests/integration/test_planner_vs_trace.py):
- end of forward / start of backward: weights + optimizer states + buffers +
  all saved activations + the logits peak + gradients that already exist
  (DeepSpeed's ZeRO-2/3 gradient partitions always; FSDP's sharded and unsharded
  gradients only when gradient accumulation keeps them from the previous micro-batch);
- end of backward / optimizer step: weights + optimizer states + buffers +
  all gradients + the step's own transient copies.
Without `--global-batch` the planner assumes gradient accumulation (the common
case on a cluster) and so counts gradients in both moments: never lower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.memory.activations import activation_estimate
from planner.memory.buffers import buffers
from planner.memory.host import USABLE_HOST_FRACTION, HostMemory, host_memory
from planner.memory.model_states import model_states, parallelism
from planner.memory.overhead import (
    USABLE_FRACTION,
    fragmentation_bytes,
    framework_overhead_bytes,
)
from planner.setups import Setup
from planner.specs import ClusterSpec, ModelSpec

PeakPhase = Literal["forward-backward", "optimizer-step"]


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes on one GPU (and per node for host memory). `total_bytes` is the peak."""

    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    logits_bytes: int
    buffers_bytes: int
    framework_overhead_bytes: int
    fragmentation_bytes: int
    total_bytes: int
    peak_phase: PeakPhase
    usable_bytes: int
    trainable_params: int
    host: HostMemory
    usable_host_bytes: int
    gradient_accumulation_steps: int | None  # None: unknown (no --global-batch)

    @property
    def fits_gpu(self) -> bool:
        return self.total_bytes <= self.usable_bytes

    @property
    def fits_host(self) -> bool:
        return self.host.cpu_bytes <= self.usable_host_bytes


def _lm_head_grad_bytes(spec: ModelSpec, setup: Setup, grads_full_bytes: int) -> int:
    """Gradient of the output head (tied: the embedding), when it trains."""
    if setup.method != "full" or spec.params_total == 0:
        return 0
    head = spec.params_lm_head or spec.params_embedding
    return round(grads_full_bytes * head / spec.params_total)


def gradient_accumulation(cluster: ClusterSpec, setup: Setup) -> int | None:
    if setup.global_batch_size is None:
        return None
    dp = cluster.world_size // (setup.tp * setup.pp)
    return max(1, setup.global_batch_size // (setup.micro_batch_size * dp))


def estimate_memory(
    spec: ModelSpec,
    cluster: ClusterSpec,
    setup: Setup,
    *,
    traced_dynamic_bytes: int | None = None,
) -> MemoryBreakdown:
    """The per-GPU peak. `traced_dynamic_bytes` (from `--trace`: what forward and
    backward add on top of the model states, measured) replaces the analytic
    activations + logits; everything else stays analytic (planner/trace_plan.py)."""
    par = parallelism(cluster, setup)
    states = model_states(spec, cluster, setup)
    acts = activation_estimate(spec, setup)
    buf = buffers(spec, setup, states, par)
    ga = gradient_accumulation(cluster, setup)

    base = states.weights_bytes + states.optimizer_bytes + buf.persistent_bytes
    # DeepSpeed keeps its gradient partitions in buffers made at start-up
    # (stage3.py:791 `grad_partitions_flat_buffer`; ZeRO-1/2 reuse theirs), so they
    # exist in forward whatever the accumulation. FSDP2 (the recipes' FSDP) assigns each
    # sharded parameter its `.grad` (_fsdp_collectives.py:754), which the Trainer's
    # `model.zero_grad()` after every step (trainer.py:1991; set_to_none) frees: without
    # accumulation there is no gradient in forward, as for plain data parallel.
    deepspeed_partitions = setup.shards_gradients and setup.fsdp is None
    grads_during_forward = states.gradients_bytes if (deepspeed_partitions or ga != 1) else 0
    activations, logits = acts.activations_bytes, acts.logits_bytes
    saved = activations + logits - acts.overlap_bytes
    # First step of backward: the lm_head's gradient appears while every layer's
    # activations are still alive (matters for short sequences and big vocabularies).
    at_head = base + activations + grads_during_forward
    if not grads_during_forward:
        at_head += _lm_head_grad_bytes(spec, setup, states.gradients_full_bytes)
    if traced_dynamic_bytes is not None:
        saved = traced_dynamic_bytes  # measured; already holds the head gradient moment
        logits = min(logits, saved)
        activations = saved - logits
        at_head = 0
    at_forward = base + saved + grads_during_forward
    at_step = base + states.gradients_bytes + buf.optimizer_step_bytes
    phase: PeakPhase = (
        "forward-backward" if max(at_forward, at_head) >= at_step else "optimizer-step"
    )
    tensor_peak = max(at_forward, at_head, at_step)
    dynamic = activations + logits + states.gradients_bytes + buf.persistent_bytes
    calibration = cluster.calibration
    frag = fragmentation_bytes(dynamic, tensor_peak, calibration)
    overhead = framework_overhead_bytes(cluster.world_size, cluster.nodes, calibration)
    host = host_memory(spec, cluster, setup, states)
    return MemoryBreakdown(
        weights_bytes=states.weights_bytes,
        gradients_bytes=states.gradients_bytes,
        optimizer_bytes=states.optimizer_bytes,
        activations_bytes=activations,
        logits_bytes=logits,
        buffers_bytes=buf.persistent_bytes + buf.optimizer_step_bytes,
        framework_overhead_bytes=overhead,
        fragmentation_bytes=frag,
        total_bytes=tensor_peak + overhead + frag,
        peak_phase=phase,
        usable_bytes=round(cluster.gpu.memory_bytes * USABLE_FRACTION),
        trainable_params=states.trainable_params,
        host=host,
        usable_host_bytes=round(cluster.node_ram_bytes * USABLE_HOST_FRACTION),
        gradient_accumulation_steps=ga,
    )
