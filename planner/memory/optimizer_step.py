"""What exists only while `optimizer.step()` runs, per GPU: the step's transient bytes,
by optimizer implementation (the `Setup.optimizer` dimension).

A trace on fake CPU tensors replays whichever implementation it is given; on CUDA,
`torch.optim.AdamW` with neither flag takes the *foreach* path, so the implementation
the recipe runs decides the step's peak. Read from torch 2.13 and transformers 5.25
(paths under site-packages):

- `adamw` — torch's fused AdamW (`optim="adamw_torch_fused"`, transformers'
  `TrainingArguments` default for torch >= 2.8, training_args.py:806-811, and the
  recipes' default): `_fused_adam` calls `torch._fused_adamw_` once per device/dtype
  group and updates params, `exp_avg` and `exp_avg_sq` in place (torch/optim/adam.py,
  `_fused_adam`): no temporaries.
- `adamw-foreach` — `optim="adamw_torch"` on CUDA: `_default_to_fused_or_foreach`
  (torch/optim/optimizer.py:161-185) picks foreach for CUDA tensors, and
  `_multi_tensor_adam` makes `exp_avg_sq_sqrt = torch._foreach_sqrt(device_exp_avg_sqs)`
  (torch/optim/adam.py:761), a new tensor per state tensor of the whole param group,
  divided and added in place, alive until `_foreach_addcdiv_`: +1x the group's
  `exp_avg_sq` bytes. transformers puts every weight matrix in one group
  (decay) and biases/norms in the other, so the largest group is ~all trainable
  parameters; counting all of them is never low.
- `adamw-single` — `foreach=False, fused=False`, what a CPU run takes:
  `_single_tensor_adam` computes `denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt)`
  (torch/optim/adam.py:544): `sqrt` and the division exist at once, two tensors the
  size of the parameter being updated, one parameter at a time: 2x the largest one.
- `adamw-8bit`, `paged-adamw-8bit` — bitsandbytes' blockwise 8-bit update runs in
  place on the quantized state (bitsandbytes/optim/optimizer.py:570 and :736,
  `F.optimizer_update_8bit_blockwise`): no temporaries.
- `adafactor` — transformers' `Adafactor.step` (optimization.py:1215-1293), one
  parameter at a time: for a 16-bit parameter `grad.float()` (:1221) and
  `p.float()` (:1253) are fp32 copies; `update = grad**2 + eps` (:1261), and for a
  matrix `_approx_sq_grad` returns `torch.mul(r_factor, c_factor)` (:1200, :1270)
  while the previous `update` is still bound: two fp32 tensors of the parameter's size.
  16 bytes per element of the largest parameter in 16-bit, 8 in fp32.
- `sgd` — `optim="sgd"` is `torch.optim.SGD` without momentum
  (transformers trainer_optimizer.py:317-326): `_foreach_add_(params, grads)` in place.

Under DeepSpeed ZeRO the optimizer never sees the model's parameters: ZeRO-1/2 give it
one flat fp32 partition per param group (`single_partition_of_fp32_groups`,
deepspeed/runtime/zero/stage_1_and_2.py:577, stepped in `_optimizer_step`, :2967), and
ZeRO-3 one flat tensor per sub-group of at most `sub_group_size` elements
(`fp32_partitioned_groups_flat`, stage3.py:1235-1260, sub-groups made at :1211-1232;
the recipes write `sub_group_size` 1e9, recipes/train/distributed_config.py). So the
"largest parameter" of the single-tensor and Adafactor paths is the whole flat tensor,
and foreach's group is that same tensor. With the optimizer offloaded, the step runs
on the CPU (DeepSpeedCPUAdam): nothing on the GPU.
"""

from __future__ import annotations

from planner.memory.dtypes import ADAPTER, LAYOUTS
from planner.memory.model_states import ModelStates, Parallelism, state_bytes_per_element
from planner.setups import Setup
from planner.specs import ModelSpec

#: recipes/train/distributed_config.py writes this ZeRO-3 `sub_group_size` (elements).
ZERO3_SUB_GROUP_ELEMENTS = 1_000_000_000


def largest_trainable_tensor(
    spec: ModelSpec, setup: Setup, n_train_rank: float, shard_degree: int
) -> float:
    """Elements of the largest trainable tensor one rank's optimizer updates at once
    (FSDP shards every parameter, so its optimizer sees each one's local shard)."""
    if setup.zero_stage in (1, 2):
        return n_train_rank  # one flat partition per param group
    if setup.zero_stage == 3:
        return min(n_train_rank, ZERO3_SUB_GROUP_ELEMENTS)
    largest = float(spec.params_lm_head or spec.params_embedding)
    if setup.method != "full":
        largest = min(largest, n_train_rank)
    if setup.fsdp is not None:
        largest /= shard_degree
    return largest / setup.tp


def step_transient_bytes(
    spec: ModelSpec, setup: Setup, states: ModelStates, par: Parallelism
) -> int:
    """Bytes that exist only during the optimizer step on one GPU (module docstring)."""
    if setup.offload_optimizer != "none":
        return 0
    n_train_rank = states.trainable_params / par.model_parallel
    if setup.shards_optimizer:
        n_train_rank /= par.shard_degree
    layout = ADAPTER if setup.is_adapter else LAYOUTS[setup.precision]
    state_b = state_bytes_per_element(setup, layout)
    largest = largest_trainable_tensor(spec, setup, n_train_rank, par.shard_degree)
    if setup.optimizer == "adamw-foreach":
        return round(n_train_rank * state_b)
    if setup.optimizer == "adamw-single":
        return round(2 * largest * state_b)
    if setup.optimizer == "adafactor":
        # fp32 master partitions (ZeRO, mixed precision) and fp32 adapters need no copies
        flat = setup.zero_stage is not None and setup.zero_stage > 0
        upcasts = 0 if layout.weight_bytes == 4 or flat else 2
        return round(largest * 4 * (2 + upcasts))
    return 0  # adamw (fused), 8-bit AdamW, sgd: in place
