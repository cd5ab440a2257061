"""Model states per GPU: weights, gradients, optimizer states (the ZeRO paper's Ψ terms).

Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models", §5 and Table 1: with mixed-precision Adam a model of Ψ
parameters holds 2Ψ (16-bit weights) + 2Ψ (16-bit gradients) + KΨ (K = 12: fp32
master weights, momentum and variance). ZeRO-1 divides the K term by the
data-parallel degree N_d, ZeRO-2 also the gradients, ZeRO-3 also the weights.
FSDP maps onto the same terms: FULL_SHARD = ZeRO-3, SHARD_GRAD_OP = ZeRO-2,
HYBRID_SHARD = ZeRO-3 inside a node, replicated across nodes.
Tensor (TP) and pipeline (PP) parallelism divide every model state by TP·PP
(Megatron-LM; Narayanan et al. 2021).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.layers import layer_linears, quantizable_params, resolve_lora_targets, trainable_params
from planner.memory.dtypes import (
    ADAPTER,
    LAYOUTS,
    NF4_DOUBLE_QUANT_BYTES,
    QLORA_UNQUANTIZED_BYTES,
    DtypeLayout,
)
from planner.setups import Setup
from planner.specs import ClusterSpec, ModelSpec


@dataclass(frozen=True)
class Parallelism:
    """How one GPU's share is computed. `shard_degree` is N_d of the ZeRO paper."""

    data_parallel: int
    shard_degree: int
    model_parallel: int  # TP · PP


def parallelism(cluster: ClusterSpec, setup: Setup) -> Parallelism:
    mp = setup.tp * setup.pp
    dp = cluster.world_size // mp
    shard = dp
    if setup.fsdp == "hybrid":
        shard = max(1, min(dp, cluster.gpus_per_node // setup.tp))
    return Parallelism(data_parallel=dp, shard_degree=shard, model_parallel=mp)


@dataclass(frozen=True)
class ModelStates:
    """Bytes on one GPU. `*_full_bytes` are the unsharded per-GPU sizes (after TP/PP)."""

    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    gradients_full_bytes: int  # all trainable gradients of this rank before any ZeRO sharding
    weight_bytes_per_param: float  # of the (frozen or trained) base model on the GPU
    trainable_params: int
    cpu_optimizer_bytes: int  # per rank, when the optimizer is offloaded (cpu or nvme)
    cpu_param_bytes: int  # per rank, when parameters are offloaded


def _optimizer_state_elems(spec: ModelSpec, setup: Setup, n_trainable: int) -> float:
    """Optimizer state elements per trainable parameter (excluding the fp32 master).

    AdamW, every implementation: m and v (Loshchilov & Hutter 2019) -> 2. 8-bit AdamW
    (bitsandbytes, Dettmers et al. 2022): m and v in 1 byte each -> counted as 2
    elements of 1 byte by `state_bytes_per_element`. SGD as transformers runs
    `optim="sgd"`: `torch.optim.SGD` without momentum (trainer_optimizer.py:317-326),
    which stores no momentum buffer (torch/optim/sgd.py:144-150) -> 0. Adafactor
    (Shazeer & Stern 2018) as transformers runs it (`beta1=None`: no momentum) keeps a
    row and a column vector per matrix instead of v: Σ(rows + cols) / params; a 1-D
    tensor keeps a full v (optimization.py:1185-1188, 1237-1241), and under DeepSpeed
    ZeRO every tensor the optimizer sees is a flat 1-D partition -> 1.
    """
    if setup.optimizer in ("adamw", "adamw-foreach", "adamw-single"):
        return 2.0
    if setup.optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        return 2.0
    if setup.optimizer == "sgd":
        return 0.0
    # adafactor: factored second moment, unless the optimizer sees flat partitions
    if n_trainable == 0:
        return 0.0
    if setup.zero_stage is not None and setup.zero_stage > 0:
        return 1.0
    if setup.is_adapter:
        vectors = 0
        for lin in resolve_lora_targets(spec, setup.lora_targets):
            vectors += lin.count * (setup.lora_rank + lin.in_features)  # A: r × in
            vectors += lin.count * (lin.out_features + setup.lora_rank)  # B: out × r
        return vectors * spec.num_layers / n_trainable
    layer_vectors = sum(
        lin.count * (lin.in_features + lin.out_features) for lin in layer_linears(spec)
    )
    non_matrix = spec.params_per_layer - spec.linear_params_per_layer
    layers = spec.num_layers if setup.method == "full" else setup.freeze_trainable_layers
    vectors = layers * (layer_vectors + non_matrix)
    if setup.method == "full":
        vectors += 2 * (spec.vocab_size + spec.hidden_size) + spec.params_final_norm
    return vectors / n_trainable


def state_bytes_per_element(setup: Setup, layout: DtypeLayout) -> float:
    """Bytes per optimizer-state element. torch's AdamW keeps its states in the
    parameter's dtype (`torch.zeros_like(p)`, torch/optim/adam.py `_init_group`);
    transformers' Adafactor in fp32 whatever the parameter (`grad.float()` first,
    states `.to(grad)`, optimization.py:1221, 1233-1241)."""
    if setup.optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        # 1 byte per state element + one fp32 absmax per 2048-element block.
        return 1 + 4 / 2048
    if setup.optimizer == "adafactor":
        return 4.0
    return layout.state_bytes


def base_weight_bytes_per_param(spec: ModelSpec, setup: Setup) -> float:
    """Average bytes per base-model parameter on the GPU (QLoRA mixes 4-bit and fp32)."""
    layout = LAYOUTS[setup.precision]
    if setup.method != "qlora":
        return float(layout.weight_bytes)
    quantized = quantizable_params(spec)
    rest = spec.params_total - quantized
    total = quantized * NF4_DOUBLE_QUANT_BYTES + rest * QLORA_UNQUANTIZED_BYTES
    return total / spec.params_total


def model_states(spec: ModelSpec, cluster: ClusterSpec, setup: Setup) -> ModelStates:
    """Weights, gradients and optimizer states on one GPU (see the module docstring)."""
    par = parallelism(cluster, setup)
    layout = LAYOUTS[setup.precision]
    mp = par.model_parallel
    n_train = trainable_params(spec, setup)
    adapter = setup.is_adapter
    train_layout = ADAPTER if adapter else layout

    # Weights: the base model (all of it for full/freeze/adapters) + adapters.
    base_bpp = base_weight_bytes_per_param(spec, setup)
    base_weights = spec.params_total * base_bpp / mp
    adapter_weights = n_train * ADAPTER.weight_bytes / mp if adapter else 0.0
    weights = base_weights + adapter_weights
    if setup.shards_params:
        weights /= par.shard_degree
    cpu_param = 0.0
    if setup.offload_params != "none":
        cpu_param = weights
        weights = 0.0

    # Gradients: only trainable parameters.
    grads_full = n_train * train_layout.grad_bytes / mp
    grads = grads_full / par.shard_degree if setup.shards_gradients else grads_full
    if setup.offload_optimizer != "none" and setup.shards_gradients:
        # ZeRO-Offload streams each reduced gradient bucket into the host's fp32
        # partition; no gradient partition stays on the GPU (buckets: buffers.py).
        grads = 0.0

    # Optimizer: fp32 master (mixed precision, not adapters) + states.
    state_elems = _optimizer_state_elems(spec, setup, n_train)
    per_param = train_layout.master_bytes + state_elems * state_bytes_per_element(
        setup, train_layout
    )
    opt = n_train * per_param / mp
    if setup.shards_optimizer:
        opt /= par.shard_degree
    cpu_opt = 0.0
    if setup.offload_optimizer != "none":
        # DeepSpeed ZeRO-Offload keeps master, states and an fp32 gradient copy on the host.
        cpu_opt = opt + n_train * 4 / mp / (par.shard_degree if setup.shards_optimizer else 1)
        opt = 0.0

    return ModelStates(
        weights_bytes=round(weights),
        gradients_bytes=round(grads),
        optimizer_bytes=round(opt),
        gradients_full_bytes=round(grads_full),
        weight_bytes_per_param=base_bpp,
        trainable_params=n_train,
        cpu_optimizer_bytes=round(cpu_opt),
        cpu_param_bytes=round(cpu_param),
    )
