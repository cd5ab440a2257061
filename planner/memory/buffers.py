"""Communication buckets, gathered parameters and transient copies, per GPU.

Sizes follow the DeepSpeed / FSDP settings tuneboard writes into its recipes
(recipes/schema/recipe.py), which are the Hugging Face integration's defaults:
- ZeRO-1/2: `reduce_bucket_size` = `allgather_bucket_size` = 2e8 elements,
  `overlap_comm: true`. The HF DeepSpeed guide: overlap_comm "uses 4.5x the
  allgather_bucket_size and reduce_bucket_size values" (docs, "ZeRO-2 config").
- ZeRO-3: a module's parameters are gathered whole before it runs
  (`stage3_prefetch_bucket_size` = 0.9·h² more are prefetched,
  `reduce_bucket_size` = h², the HF "auto" values); never less than DeepSpeed's
  estimator's one layer of 16-bit parameters and gradients.
- FSDP: one wrapped decoder layer unsharded plus the prefetched next one, and
  one layer's unsharded gradients before reduce-scatter (PyTorch FSDP docs,
  `BackwardPrefetch.BACKWARD_PRE`).
- Plain data parallel (ZeRO-0, more than one GPU): DDP's gradient buckets are a
  second copy of the gradients (`gradient_as_bucket_view=False`, the default).
- DeepSpeed's fp32 gradient copies, which the ZeRO paper's 2Ψ + 2Ψ + 12Ψ does
  not count (DeepSpeed's own estimators do: 2Ψ + 18Ψ/N for ZeRO-2, 18Ψ/N for
  ZeRO-3; tests/unit/test_deepspeed_estimators.py).
- The optimizer step's own transient copies, by implementation:
  planner/memory/optimizer_step.py.
- QLoRA dequantises one 4-bit weight at a time to the compute dtype. (DoRA's
  weight-norm transient is an activation-time term: planner/memory/activations.py.)
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.layers import layer_linears
from planner.memory.dtypes import ADAPTER, LAYOUTS
from planner.memory.model_states import ModelStates, Parallelism
from planner.memory.optimizer_step import step_transient_bytes
from planner.setups import Setup
from planner.specs import ModelSpec

ZERO12_BUCKET_ELEMENTS = 200_000_000
OVERLAP_COMM_FACTOR = 4.5
ZERO3_PREFETCH_FRACTION = 0.9


@dataclass(frozen=True)
class Buffers:
    persistent_bytes: int  # alive during forward and backward
    optimizer_step_bytes: int  # extra, only during the optimizer step


def buffers(spec: ModelSpec, setup: Setup, states: ModelStates, par: Parallelism) -> Buffers:
    layout = LAYOUTS[setup.precision]
    grad_b = ADAPTER.grad_bytes if setup.is_adapter else layout.grad_bytes
    wb = states.weight_bytes_per_param
    h = spec.hidden_size
    n_train_rank = states.trainable_params / par.model_parallel
    persistent = 0.0
    step = 0.0
    if setup.zero_stage == 0 and par.data_parallel > 1:
        persistent += states.gradients_full_bytes
    if setup.zero_stage in (1, 2):
        persistent += OVERLAP_COMM_FACTOR * min(ZERO12_BUCKET_ELEMENTS, n_train_rank) * grad_b
    if setup.shards_params and setup.zero_stage == 3:
        largest = max(
            max(lin.in_features * lin.out_features for lin in layer_linears(spec)),
            spec.params_embedding,
            spec.params_lm_head,
        )
        prefetch = ZERO3_PREFETCH_FRACTION * h * h
        gathered = wb * (largest + prefetch) / setup.tp + min(h * h, n_train_rank) * grad_b
        # Floor: DeepSpeed's own estimator holds one whole layer's 16-bit
        # parameters and gradients (4 bytes × largest layer) at once.
        one_layer = (LAYOUTS[setup.precision].weight_bytes + grad_b) * spec.params_per_layer
        persistent += max(gathered, one_layer / setup.tp)
    if setup.fsdp is not None:
        if setup.fsdp in ("full", "hybrid"):
            persistent += 2 * wb * spec.params_per_layer / setup.tp
        persistent += grad_b * spec.params_per_layer / setup.tp if not setup.is_adapter else 0
    if setup.method == "qlora":
        largest = max(lin.in_features * lin.out_features for lin in layer_linears(spec))
        persistent += layout.activation_bytes * largest / setup.tp
    step += step_transient_bytes(spec, setup, states, par)
    deepspeed_mixed = layout.mixed and not setup.is_adapter and setup.offload_optimizer == "none"
    if deepspeed_mixed and setup.zero_stage in (1, 2):
        # DeepSpeed upcasts this rank's gradient partition to fp32 for the step
        # (stage_1_and_2.py; its estimator counts these "4_grads_32bit").
        step += 4 * n_train_rank / par.shard_degree
    if deepspeed_mixed and setup.zero_stage == 3:
        # ZeRO-3 accumulates the gradient partition in fp32 (grad_accum_dtype), not
        # the 16-bit partition the ZeRO paper counts: 2 bytes per parameter more.
        persistent += 2 * n_train_rank / par.shard_degree
    return Buffers(persistent_bytes=round(persistent), optimizer_step_bytes=round(step))
