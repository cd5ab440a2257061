"""The DeepSpeed JSON and the FSDP options a recipe's `distributed:` section stands for.

`deepspeed_config()` is what `python -m recipes.run` hands to the HF Trainer (and writes
to `<output.dir>/deepspeed.json` so the user can read it); `fsdp_options()` is the
`fsdp` / `fsdp_config` pair for TrainingArguments. Pure standard library, so the launcher
and `tuneboard plan` can show them without importing DeepSpeed.

Values follow DeepSpeed's and HF's documented defaults for each ZeRO stage:
- ZeRO-1/2: communication buckets of 2e8 elements (reduce_bucket_size,
  allgather_bucket_size), overlap_comm and contiguous_gradients on.
- ZeRO-3: the bucket, prefetch and persistence sizes are "auto", which the HF Trainer fills
  from the model's hidden size (hidden², 0.9·hidden², 10·hidden); 16-bit weights are
  gathered on save so that checkpoints are ordinary HF weights.
- Micro batch, gradient clipping and precision are concrete (from the recipe);
  gradient accumulation and the train batch size are concrete when the world size is
  known and "auto" otherwise (HF fills them at run time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recipes.schema import OffloadKind, PrecisionKind, Recipe

#: Elements per communication bucket for ZeRO-1/2 (DeepSpeed's docs and HF's examples).
BUCKET_ELEMENTS = 200_000_000


def _offload(device: OffloadKind, nvme_path: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"device": device, "pin_memory": True}
    if device == "nvme":
        out["nvme_path"] = nvme_path
    return out


def _precision_block(precision: PrecisionKind) -> dict[str, Any]:
    bf16: dict[str, Any] = {"enabled": precision in ("bf16-mixed", "bf16-pure")}
    if precision == "bf16-pure":
        # Master weights, gradients and optimizer states in bf16 (DeepSpeed >= 0.18).
        bf16["bf16_master_weights_and_grads"] = True
        bf16["bf16_optimizer_states"] = True
    fp16: dict[str, Any] = {"enabled": precision == "fp16-mixed"}
    if precision == "fp16-mixed":
        # Dynamic loss scaling from 2^16, DeepSpeed's defaults.
        fp16.update(
            loss_scale=0,
            initial_scale_power=16,
            loss_scale_window=1000,
            hysteresis=2,
            min_loss_scale=1,
        )
    return {"bf16": bf16, "fp16": fp16}


def _zero_block(recipe: Recipe) -> dict[str, Any]:
    dist = recipe.distributed
    stage = dist.zero_stage or 0
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage in (1, 2):
        zero.update(
            reduce_scatter=True,
            reduce_bucket_size=BUCKET_ELEMENTS,
            allgather_partitions=True,
            allgather_bucket_size=BUCKET_ELEMENTS,
        )
    if stage == 3:
        zero.update(
            sub_group_size=1_000_000_000,
            reduce_bucket_size="auto",
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_max_live_parameters=1_000_000_000,
            stage3_max_reuse_distance=1_000_000_000,
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if dist.offload_optimizer != "none":
        zero["offload_optimizer"] = _offload(dist.offload_optimizer, dist.nvme_path)
    if dist.offload_params != "none":
        zero["offload_param"] = _offload(dist.offload_params, dist.nvme_path)
    return zero


def deepspeed_config(
    recipe: Recipe,
    *,
    world_size: int | None = None,
    precision: PrecisionKind | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config for a recipe with zero_stage 1-3 (ValueError otherwise).

    `world_size`: data-parallel ranks, to make gradient accumulation and the train batch
    concrete. `precision`: the precision actually used, when the run changed the recipe's
    (fp16 on a machine without CUDA runs in fp32).
    """
    dist, training = recipe.distributed, recipe.training
    if not dist.zero_stage:
        raise ValueError("deepspeed_config() is for distributed.zero_stage 1, 2 or 3")
    accumulation: int | str = "auto"
    train_batch: int | str = "auto"
    if world_size is not None:
        accumulation = training.accumulation_for(world_size)
        train_batch = training.micro_batch_size * accumulation * world_size
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": training.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": train_batch,
        "gradient_clipping": training.max_grad_norm,
        **_precision_block(precision or training.precision),
        "zero_optimization": _zero_block(recipe),
        "steps_per_print": 1_000_000_000,  # the Trainer logs; DeepSpeed's own prints are noise
        "wall_clock_breakdown": False,
    }
    if dist.offload_optimizer != "none":
        # ZeRO-Offload steps on the CPU with DeepSpeed's own CPU Adam (a torch optimizer
        # is refused); its hyper-parameters are filled from the recipe by the Trainer.
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
        }
    if training.optimizer not in ("adamw", "adamw-foreach"):
        config["zero_allow_untested_optimizer"] = True
    return config


def fsdp_config(recipe: Recipe, *, gradient_checkpointing: bool) -> dict[str, Any]:
    """`fsdp_config` for TrainingArguments (with `fsdp=True`): FSDP2, transformer-layer wrap.

    full: parameters resharded after forward (ZeRO-3-like); grad-op: kept gathered until
    backward (ZeRO-2-like); hybrid: full sharding inside a node and replicas across nodes
    (the run adds accelerate's ParallelismConfig for the node count). Activation
    checkpointing goes through FSDP (avoids a second all-gather in backward).
    """
    dist = recipe.distributed
    if dist.fsdp is None:
        raise ValueError("fsdp_config() is for distributed.fsdp full, grad-op or hybrid")
    return {
        "version": 2,
        "reshard_after_forward": dist.fsdp != "grad-op",
        "cpu_offload": dist.offload_params == "cpu",
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "state_dict_type": (
            "FULL_STATE_DICT" if dist.fsdp_state_dict == "full" else "SHARDED_STATE_DICT"
        ),
        "cpu_ram_efficient_loading": True,
        "activation_checkpointing": gradient_checkpointing,
    }
