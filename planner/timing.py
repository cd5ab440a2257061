"""Step time and throughput: FLOPs at a per-GPU-class MFU, plus exposed communication.

- FLOPs: 2 per multiply-add of every weight a token touches in forward, twice
  that in backward (Kaplan et al. 2020, "Scaling Laws", §2.1: C ≈ 6N per token),
  plus causal attention 2·L·s·a·d per token in forward (half of Narayanan et al.
  2021's 4·s·h per layer, flash/sdpa skip the masked half). Frozen weights need
  only input gradients in backward (1× forward, not 2×); gradient checkpointing
  repeats the forward (+1×). The lm_head is a matmul; the input embedding is not.
- Time = FLOPs / (dense peak × MFU), MFU per GPU class from planner/data/gpus.json.
  QLoRA dequantises every weight in forward and backward: × 1/0.7 (QLoRA runs
  ~30-40% slower than LoRA in public benchmarks, e.g. the PEFT docs and
  Dettmers et al. 2023 §4); DoRA's weight norm: × 1/0.8.
- Communication per optimizer step (ring collectives move 2·(n-1)/n of the data
  for all-reduce, (n-1)/n for reduce-scatter / all-gather; Patarasuk & Yuan 2009):
  DDP and ZeRO-1: one gradient all-reduce; ZeRO-2: a reduce-scatter every
  micro-step and one all-gather of the weights; ZeRO-3 / FSDP: all-gather in
  forward and backward and a reduce-scatter every micro-step (ZeRO paper §7.2:
  1.5× DDP's volume). Bandwidth: NVLink inside a node, the node's network share
  across nodes (a ring crosses each node boundary with the
  same volume), at 70% of line rate (NCCL bus bandwidth in practice).
  Half of the compute time hides communication (DeepSpeed `overlap_comm`,
  DDP bucketing); the rest is exposed.
  What cannot hide: each collective's latency (NCCL_LATENCY_S; nccl-tests report
  tens of microseconds for small messages inside a node, more across nodes), and
  ZeRO-3/FSDP issue one per layer per pass.
- The optimizer step is memory-bound: every trainable parameter of the rank's shard
  is read and written at HBM speed (HBM_EFFICIENCY of the datasheet, as STREAM-like
  kernels reach). Fused AdamW (`torch._fused_adamw_`) reads weight, gradient, m and v
  and writes weight, m and v once; the foreach and single-tensor paths run one kernel
  per operation (lerp, mul, addcmul, sqrt, div, add, addcdiv: torch/optim/adam.py),
  about three times the traffic; mixed precision then copies the fp32 master into the
  16-bit weights, and gradient clipping reads every gradient once more. It does not
  shrink with the micro-batch, so tokens/s grows with it, and ZeRO-1+ shards it.
- Offload: DeepSpeed CPU Adam at CPU_ADAM_PARAMS_PER_S per node, gradients down
  and weights up over PCIe; NVMe at NVME_BYTES_PER_S per node.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.layers import trainable_params
from planner.memory.breakdown import gradient_accumulation
from planner.memory.dtypes import ADAPTER, LAYOUTS
from planner.memory.model_states import base_weight_bytes_per_param, state_bytes_per_element
from planner.setups import Setup
from planner.specs import ClusterSpec, ModelSpec

LINK_EFFICIENCY = 0.7
OVERLAP_FRACTION = 0.5
CPU_ADAM_PARAMS_PER_S = 1.0e9
NVME_BYTES_PER_S = 6.0e9
HBM_EFFICIENCY = 0.8
NCCL_LATENCY_S = 50e-6
QLORA_SLOWDOWN = 1 / 0.7
DORA_SLOWDOWN = 1 / 0.8


@dataclass(frozen=True)
class TimeEstimate:
    """Seconds per optimizer step and tokens per second for the whole cluster."""

    flops_per_token: float
    compute_s: float  # per optimizer step, per GPU
    communication_s: float  # exposed (not hidden behind compute)
    optimizer_s: float  # the optimizer step on the GPU (memory-bound)
    offload_s: float
    step_time_s: float
    tokens_per_step: int  # all GPUs, one optimizer step
    tokens_per_s: float
    mfu: float
    gradient_accumulation_steps: int


def forward_flops_per_token(spec: ModelSpec, seq_len: int) -> float:
    """Forward FLOPs per token: 2 per weight touched + causal attention."""
    matmul_params = spec.params_active - spec.params_embedding + spec.vocab_size * spec.hidden_size
    attention = 2 * spec.num_layers * seq_len * spec.num_attention_heads * spec.head_dim
    return 2 * matmul_params + attention


def training_flops_per_token(spec: ModelSpec, setup: Setup) -> float:
    fwd = forward_flops_per_token(spec, setup.seq_len)
    if setup.method == "full":
        bwd = 2 * fwd
    elif setup.method == "freeze":
        share = setup.freeze_trainable_layers / spec.num_layers
        bwd = 2 * fwd * share + 2 * spec.vocab_size * spec.hidden_size
    else:
        bwd = fwd + 4 * trainable_params(spec, setup)
    recompute = fwd if setup.gradient_checkpointing else 0.0
    return fwd + bwd + recompute


def _peak_flops(cluster: ClusterSpec, setup: Setup) -> float:
    gpu = cluster.gpu
    if setup.precision == "fp32":
        tflops = gpu.fp32_tflops
    elif setup.precision == "fp16-mixed":
        tflops = gpu.fp16_tflops
    else:
        tflops = gpu.bf16_tflops
    if tflops is None:
        tflops = gpu.fp32_tflops or 1.0
    return tflops * 1e12


def _per_gpu_link_bytes_per_s(cluster: ClusterSpec) -> float:
    """Bandwidth a ring collective sees per GPU, one direction.

    A ring (or NCCL's rings over several channels) moves the same S·(n-1)/n bytes
    across every link, so across nodes the bottleneck is the node's network as a
    whole, not its share per GPU; inside a node it is NVLink (PCIe without it).
    """
    gpu = cluster.gpu
    intra = gpu.nvlink_bytes_per_s or gpu.pcie_bytes_per_s
    if cluster.nodes == 1:
        return intra * LINK_EFFICIENCY
    return min(intra, cluster.inter_node_bytes_per_s) * LINK_EFFICIENCY


def optimizer_step_s(spec: ModelSpec, cluster: ClusterSpec, setup: Setup, dp: int) -> float:
    """Seconds of one optimizer step on one GPU: bytes moved through HBM (module docstring)."""
    if setup.offload_optimizer != "none":
        return 0.0  # DeepSpeed's CPU Adam: offload_s
    mp = setup.tp * setup.pp
    n = trainable_params(spec, setup) / mp
    if setup.shards_optimizer:
        n /= dp
    layout = ADAPTER if setup.is_adapter else LAYOUTS[setup.precision]
    # bytes per state element as the memory model counts them (SGD keeps no state)
    state = 0.0 if setup.optimizer == "sgd" else state_bytes_per_element(setup, layout)
    weight = layout.master_bytes or layout.weight_bytes
    grad = 4 if layout.master_bytes else layout.grad_bytes
    per_param = 2 * weight + grad + 4 * state  # fused: read w, g, m, v; write w, m, v
    if setup.optimizer in ("adamw-foreach", "adamw-single", "adafactor"):
        per_param *= 3  # one kernel per operation
    if layout.master_bytes:
        per_param += layout.master_bytes + layout.weight_bytes  # master -> 16-bit copy
    per_param += layout.grad_bytes  # gradient clipping's norm
    return n * per_param / (cluster.gpu.hbm_bytes_per_s * HBM_EFFICIENCY)


def estimate_time(spec: ModelSpec, cluster: ClusterSpec, setup: Setup) -> TimeEstimate:
    mp = setup.tp * setup.pp
    dp = cluster.world_size // mp
    ga = gradient_accumulation(cluster, setup) or 1
    tokens_micro = setup.micro_batch_size * setup.seq_len
    flops_token = training_flops_per_token(spec, setup)
    slowdown = {"qlora": QLORA_SLOWDOWN, "dora": DORA_SLOWDOWN}.get(setup.method, 1.0)
    mfu = cluster.gpu.mfu
    compute_micro = flops_token * tokens_micro / mp / (_peak_flops(cluster, setup) * mfu)
    compute_micro *= slowdown
    if setup.pp > 1:  # 1F1B pipeline bubble (Narayanan et al. 2021, §2.2)
        compute_micro *= 1 + (setup.pp - 1) / ga
    compute = compute_micro * ga

    layout = LAYOUTS[setup.precision]
    grad_b = ADAPTER.grad_bytes if setup.is_adapter else layout.grad_bytes
    grads = trainable_params(spec, setup) * grad_b / mp
    weights = spec.params_total * base_weight_bytes_per_param(spec, setup) / mp
    ring = (dp - 1) / dp if dp > 1 else 0.0
    if setup.zero_stage in (0, 1):
        volume = 2 * ring * grads
    elif setup.zero_stage == 2 or setup.fsdp == "grad-op":
        volume = ga * ring * grads + ring * min(weights, grads * layout.weight_bytes / grad_b)
    else:  # ZeRO-3, FSDP full / hybrid
        gathers = 3 if setup.gradient_checkpointing else 2
        volume = ga * (gathers * ring * weights + ring * grads)
    comm = volume / _per_gpu_link_bytes_per_s(cluster) if dp > 1 else 0.0
    latency = 0.0
    if dp > 1:
        if setup.zero_stage == 3 or setup.fsdp in ("full", "hybrid"):
            layers = spec.num_layers / setup.pp
            per_micro = layers * ((3 if setup.gradient_checkpointing else 2) + 1)
            latency = ga * per_micro * NCCL_LATENCY_S
        else:
            latency = NCCL_LATENCY_S * (ga if setup.zero_stage == 2 else 1)
        latency *= 4 if cluster.nodes > 1 else 1
    if setup.tp > 1:  # 4 all-reduces of the activations per layer, forward and backward
        act = tokens_micro * spec.hidden_size * layout.activation_bytes
        tp_ring = 2 * (setup.tp - 1) / setup.tp
        nvlink = (cluster.gpu.nvlink_bytes_per_s or cluster.gpu.pcie_bytes_per_s) * LINK_EFFICIENCY
        comm += ga * 4 * spec.num_layers / setup.pp * act * tp_ring / nvlink
    exposed = max(0.0, comm - OVERLAP_FRACTION * compute) + latency
    optimizer = optimizer_step_s(spec, cluster, setup, dp)

    offload = 0.0
    n_rank = trainable_params(spec, setup) / mp / dp
    if setup.offload_optimizer != "none":
        offload += n_rank * cluster.gpus_per_node / CPU_ADAM_PARAMS_PER_S
        offload += n_rank * (grad_b + layout.weight_bytes) / cluster.gpu.pcie_bytes_per_s
        if setup.offload_optimizer == "nvme":
            offload += 2 * n_rank * 16 * cluster.gpus_per_node / NVME_BYTES_PER_S
    if setup.offload_params != "none":
        passes = 3 if setup.gradient_checkpointing else 2
        offload += ga * passes * weights / dp / cluster.gpu.pcie_bytes_per_s
        if setup.offload_params == "nvme":
            offload += ga * passes * weights / dp * cluster.gpus_per_node / NVME_BYTES_PER_S

    step = compute + exposed + optimizer + offload
    tokens_step = tokens_micro * ga * dp
    return TimeEstimate(
        flops_per_token=flops_token,
        compute_s=compute,
        communication_s=exposed,
        optimizer_s=optimizer,
        offload_s=offload,
        step_time_s=step,
        tokens_per_step=tokens_step,
        tokens_per_s=tokens_step / step if step > 0 else 0.0,
        mfu=mfu,
        gradient_accumulation_steps=ga,
    )
