"""The recipe's training/distributed/output sections as HF TrainingArguments keyword arguments.

Shared by every family: SFTConfig, DPOConfig, KTOConfig, ... all extend TrainingArguments,
so each script passes `**training_kwargs(...)` plus its task's own fields.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from recipes.train.distributed_config import deepspeed_config, fsdp_config
from recipes.train.runtime import RunContext

if TYPE_CHECKING:
    from recipes.schema import PrecisionKind, Recipe

OPTIM = {
    "adamw": "adamw_torch_fused",
    "adamw-foreach": "adamw_torch",
    "adamw-8bit": "adamw_bnb_8bit",
    "paged-adamw-8bit": "paged_adamw_8bit",
    "adafactor": "adafactor",
    "sgd": "sgd",
}


def _checkpointing(enabled: bool) -> dict[str, Any]:
    """Activation checkpointing, under the name this transformers version uses (5.2x renamed
    gradient_checkpointing to activation_checkpointing and warns on the old one)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {
        f"{prefix}_checkpointing": enabled,
        f"{prefix}_checkpointing_kwargs": {"use_reentrant": False},
    }


def training_kwargs(
    recipe: Recipe, ctx: RunContext, precision: PrecisionKind, has_eval: bool
) -> dict[str, Any]:
    """Keyword arguments for TrainingArguments (and its TRL subclasses)."""
    training, out = recipe.training, recipe.output
    accumulation = training.accumulation_for(ctx.world_size)
    warmup: float = 0
    if training.warmup_steps is not None:
        warmup = training.warmup_steps
    elif training.warmup_ratio is not None:
        warmup = training.warmup_ratio  # < 1: a fraction of the total steps
    eval_steps = training.eval_steps or training.save_steps
    kwargs: dict[str, Any] = {
        "output_dir": str(ctx.output_dir),
        "run_name": recipe.name,
        "per_device_train_batch_size": training.micro_batch_size,
        "per_device_eval_batch_size": training.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "num_train_epochs": training.epochs if training.epochs is not None else 1.0,
        "max_steps": training.max_steps if training.max_steps is not None else -1,
        "learning_rate": training.default_learning_rate(recipe.method.kind),
        "lr_scheduler_type": training.lr_scheduler,
        "warmup_steps": warmup,
        "weight_decay": training.weight_decay,
        "max_grad_norm": training.max_grad_norm,
        "optim": OPTIM[training.optimizer],
        # bf16-pure: no autocast; under DeepSpeed the flag hands bf16 to DeepSpeed's config.
        "bf16": precision == "bf16-mixed"
        or (precision == "bf16-pure" and recipe.distributed.uses_deepspeed),
        "fp16": precision == "fp16-mixed",
        **_checkpointing(training.gradient_checkpointing and recipe.distributed.fsdp is None),
        "seed": training.seed,
        "data_seed": training.seed,
        "logging_steps": training.logging_steps,
        "logging_first_step": True,
        "logging_nan_inf_filter": False,  # NaN must reach the logs: NanGuard stops on it
        "save_strategy": "steps",
        "save_steps": training.save_steps,
        "save_total_limit": training.save_total_limit,
        # Nodes without a shared filesystem each keep their own checkpoints (trainer state,
        # optimizer, RNG): a resume needs them on every node, not only on the first.
        "save_on_each_node": ctx.nodes > 1
        and not (recipe.cluster is not None and recipe.cluster.shared_fs),
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": eval_steps if has_eval else None,
        "report_to": [] if out.report_to == ["none"] else list(out.report_to),
        "use_cpu": not ctx.cuda,
        "ddp_timeout": recipe.distributed.timeout_s,
        "include_num_input_tokens_seen": "non_padding",
        "use_liger_kernel": training.fused_ce,
        "disable_tqdm": not sys.stderr.isatty(),
        "dataloader_num_workers": 0,
    }
    dist = recipe.distributed
    if dist.deepspeed_config is not None:
        kwargs["deepspeed"] = dist.deepspeed_config
    elif dist.zero_stage:
        config = deepspeed_config(recipe, world_size=ctx.world_size, precision=precision)
        if ctx.is_main:
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            (ctx.output_dir / "deepspeed.json").write_text(json.dumps(config, indent=2))
        kwargs["deepspeed"] = config
    elif dist.fsdp is not None:
        kwargs["fsdp"] = True
        kwargs["fsdp_config"] = fsdp_config(
            recipe, gradient_checkpointing=training.gradient_checkpointing
        )
        if dist.fsdp == "hybrid":
            from accelerate import ParallelismConfig

            kwargs["parallelism_config"] = ParallelismConfig(
                dp_replicate_size=ctx.nodes, dp_shard_size=ctx.world_size // ctx.nodes
            )
    return kwargs
