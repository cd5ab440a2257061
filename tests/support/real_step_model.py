"""The model that tests/support/real_step.py trains: built from its config, method applied.

Its one job: a transformers model with random weights (no download) set up the way a
recipe sets it up, through the recipes' own functions (recipes/train/modeling.py): `load_dtype`
picks the weights' dtype, `apply_freeze` freezes, `lora_config` makes the PEFT config, and
for QLoRA the random model is saved to a folder and loaded back by the recipes' `load_model`
(bitsandbytes 4-bit NF4 with double quantization, then `prepare_model_for_kbit_training`),
exactly like a recipe loads a checkpoint. What TRL adds when it wraps the model with a
`peft_config` is repeated here: adapters stay in the base dtype under ZeRO-3
(`autocast_adapter_dtype=False`, non-quantized models only), checkpointing is reentrant for
PEFT under ZeRO-3, and checkpointed PEFT models get `enable_input_require_grads()`.

Heavy libraries (torch, transformers, peft, bitsandbytes) are imported inside the functions.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from planner.setups import Setup
    from recipes.schema import Recipe
    from recipes.train.runtime import RunContext

#: Setup.attention -> transformers' attn_implementation.
_ATTENTION = {"sdpa": "sdpa", "flash": "flash_attention_2", "eager": "eager"}


def _lora_targets(setup: Setup, config: Mapping[str, Any]) -> str | list[str]:
    """PEFT's target_modules for the planner's `--lora-targets` (roles and groups such as
    `attention` resolved to this model's module names by the planner itself)."""
    from planner.hf_config import spec_from_hf_config
    from planner.layers import resolve_lora_targets

    if setup.lora_targets.strip().lower() in ("all-linear", "all_linear", "all"):
        return "all-linear"
    spec = spec_from_hf_config(dict(config), name="bench", source="config")
    return sorted({lin.name for lin in resolve_lora_targets(spec, setup.lora_targets)})


def bench_recipe(setup: Setup, config: Mapping[str, Any], model_name: str = "bench") -> Recipe:
    """The recipe a user would write for this setup (so that the recipes' own functions
    decide dtype, freezing, the PEFT config, quantization and the DeepSpeed config)."""
    from recipes.schema import parse_recipe

    return parse_recipe(
        {
            "model": {"name": model_name, "attn_implementation": _ATTENTION[setup.attention]},
            "method": {
                "kind": setup.method,
                "lora": {
                    "rank": setup.lora_rank,
                    "alpha": 2 * setup.lora_rank,
                    "dropout": setup.lora_dropout,
                    "target_modules": _lora_targets(setup, config),
                },
                "freeze_trainable_layers": setup.freeze_trainable_layers,
            },
            "training": {
                "micro_batch_size": setup.micro_batch_size,
                "gradient_accumulation_steps": 1,
                "seq_len": setup.seq_len,
                "precision": setup.precision,
                "gradient_checkpointing": setup.gradient_checkpointing,
                "optimizer": "adamw",
            },
            "distributed": {"zero_stage": setup.zero_stage or 0},
        },
        source="real_step",
    )


def bench_deepspeed_config(recipe: Recipe, hidden_size: int) -> dict[str, Any]:
    """The recipes' DeepSpeed config for one process, with the Trainer's "auto" sizes
    filled from the hidden size (transformers/integrations/deepspeed.py)."""
    from recipes.train.distributed_config import deepspeed_config

    config = deepspeed_config(recipe, world_size=1, precision=recipe.training.precision)
    auto = {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    zero = config["zero_optimization"]
    for key, value in auto.items():
        if zero.get(key) == "auto":
            zero[key] = value
    return config


def hf_config(config: Mapping[str, Any]) -> Any:
    from transformers import AutoConfig

    rest = dict(config)
    model_type = rest.pop("model_type", None)
    if model_type is None:
        raise ValueError("config needs a 'model_type' (e.g. 'llama')")
    return AutoConfig.for_model(model_type, **rest)


def build_model(recipe: Recipe, ctx: RunContext, config: Mapping[str, Any], device: str) -> Any:
    """The base model with random weights on `device`. QLoRA: the random model is saved to
    the folder `recipe.model.name` (unless it is there already) and loaded back by the
    recipes' `load_model` (bitsandbytes quantizes while from_pretrained loads, as in a run)."""
    import torch
    from transformers import AutoModelForCausalLM

    from recipes.train.modeling import load_dtype, load_model

    precision = recipe.training.precision
    cfg = hf_config(config)
    if recipe.method.kind != "qlora":
        dtype = getattr(torch, load_dtype(recipe, precision))
        with torch.device(device):  # random init on the GPU is much faster than on CPU
            model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
                cfg, dtype=dtype, attn_implementation=recipe.model.attn_implementation
            )
        model.config.use_cache = False
        return model
    if not (Path(recipe.model.name) / "config.json").exists():
        with torch.device(device):
            base = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)  # type: ignore[no-untyped-call]
        base.save_pretrained(recipe.model.name)
        del base
        free_memory(device)
    return load_model(recipe, ctx, precision)


def free_memory(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _enable_checkpointing(model: Any, *, reentrant: bool) -> None:
    """What the Trainer does for `gradient_checkpointing: true` (the recipes' kwargs)."""
    kwargs = {"use_reentrant": reentrant}
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.2x renamed it
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def apply_method(recipe: Recipe, ctx: RunContext, model: Any) -> Any:
    """freeze / LoRA / DoRA / QLoRA adapters and checkpointing, as a recipe's trainer has it."""
    from recipes.train.modeling import apply_freeze, lora_config

    kind = recipe.method.kind
    zero3 = recipe.distributed.zero_stage == 3
    ckpt = recipe.training.gradient_checkpointing
    if kind == "freeze":
        apply_freeze(recipe, model, ctx)  # also enable_input_require_grads() under ckpt
    peft_config = lora_config(recipe)
    if peft_config is not None:
        from peft import get_peft_model

        # TRL's SFTTrainer: adapters in the base dtype under ZeRO-3 (non-quantized only).
        autocast = not (zero3 and kind != "qlora")
        model = get_peft_model(model, peft_config, autocast_adapter_dtype=autocast)
    if ckpt:
        # TRL forces reentrant checkpointing for PEFT under ZeRO-3.
        _enable_checkpointing(model, reentrant=peft_config is not None and zero3)
        if peft_config is not None:
            model.enable_input_require_grads()
    model.train()
    return model
