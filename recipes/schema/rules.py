"""Rules that span several keys of a recipe; each message names the keys involved.

Called from the validators in recipes/schema/recipe.py (kept apart so that the schema file is the
format and this file is the judgement). Standard library only.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recipes.schema import (
        ClusterSection,
        DistributedSection,
        MethodSection,
        Recipe,
        TaskSection,
        TrainingSection,
    )

#: Data formats each task can train on ("auto" is resolved from the columns at run time).
TASK_FORMATS: dict[str, tuple[str, ...]] = {
    "sft": ("text", "messages", "prompt/completion"),
    "pretrain": ("text",),
    "dpo": ("prompt/chosen/rejected",),
    "orpo": ("prompt/chosen/rejected",),
    "simpo": ("prompt/chosen/rejected",),
    "kto": ("prompt/completion/label", "prompt/chosen/rejected"),
    "reward": ("prompt/chosen/rejected",),
    "grpo": ("prompt",),
}

#: Names of the token/position embeddings (nn.Embedding) in common HF models. A LoRA target
#: is matched as a module name or a dotted suffix of one (PEFT's rule for a list).
EMBEDDING_MODULES = (
    "embed_tokens",  # Llama, Qwen, Mistral, Gemma, Phi-3, ...
    "tok_embeddings",  # InternLM2
    "wte",  # GPT-2, GPT-J, CodeGen
    "wpe",
    "word_embeddings",  # Falcon, BLOOM, BERT
    "embed_in",  # GPT-NeoX, Pythia
    "embed_positions",  # OPT
)

BUILTIN_REWARDS = ("format", "length", "regex")
_FUNC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def check_reward_name(reward: str) -> None:
    """format | length:N | regex:PATTERN | package.module:function."""
    head, sep, arg = reward.partition(":")
    if head == "format" and not sep:
        return
    if head == "length":
        if not arg.isdigit() or int(arg) <= 0:
            raise ValueError(f"{reward!r}: write length:N with N the target length in characters")
        return
    if head == "regex":
        try:
            re.compile(arg)
        except re.error as exc:
            raise ValueError(f"{reward!r}: not a valid regular expression ({exc})") from None
        return
    if _FUNC.match(reward):
        return
    raise ValueError(
        f"{reward!r} is not a reward: use format, length:N, regex:PATTERN or module:function"
    )


def check_method(method: MethodSection) -> None:
    init = method.lora.init
    if method.kind == "qlora" and init in ("pissa", "loftq"):
        raise ValueError(
            f"lora.init {init!r} rewrites the base weights, which qlora keeps quantized: "
            f"use kind lora with init {init!r} (LoftQ/PiSSA quantize-aware init), or kind qlora "
            "with init default/gaussian"
        )
    if method.kind == "dora" and init == "pissa":
        raise ValueError(
            "lora.init 'pissa' with kind dora: the trained adapter is saved as a plain LoRA on "
            "the original weights (B·A - B0·A0), which DoRA's magnitude vector breaks; use kind "
            "lora with init pissa, or dora with init default/gaussian"
        )
    if init == "pissa" and isinstance(method.lora.target_modules, list):
        # Names known here; any other embedding is refused once the PEFT model is built
        # (recipes.train.modeling.check_pissa_targets), still before training.
        embeddings = [
            t for t in method.lora.target_modules if t.rsplit(".", 1)[-1] in EMBEDDING_MODULES
        ]
        if embeddings:
            raise ValueError(
                f"lora.init 'pissa' with embedding target(s) {embeddings} in "
                "lora.target_modules: PEFT has no PiSSA for nn.Embedding and the final adapter "
                "could not be converted to a plain LoRA; remove them from target_modules "
                "(train them in full with lora.modules_to_save instead) or use init "
                "default/gaussian"
            )
    if (
        method.kind == "qlora"
        and method.quantization_bits == 8
        and method.quantization_type != "nf4"
    ):
        raise ValueError("quantization_type applies to 4-bit only; remove it for 8-bit")


def check_task(task: TaskSection) -> None:
    if task.grpo is not None and task.kind != "grpo":
        raise ValueError(
            f"task.grpo is set but task.kind is {task.kind!r}; remove grpo or set kind grpo"
        )
    if task.kind == "grpo" and task.grpo is None:
        raise ValueError("task.kind grpo needs task.grpo.rewards (e.g. [format, 'length:200'])")
    if task.beta == 0 and task.kind != "grpo":
        raise ValueError(f"task.beta 0 switches off the {task.kind} objective; use beta > 0")
    if task.simpo_gamma is not None and task.kind != "simpo":
        raise ValueError(f"task.simpo_gamma only applies to kind simpo (kind is {task.kind!r})")
    if task.beta is not None and task.kind not in ("dpo", "kto", "orpo", "simpo", "grpo"):
        raise ValueError(f"task.beta does not apply to kind {task.kind!r}")
    if task.completion_only_loss is not None and task.kind != "sft":
        raise ValueError("task.completion_only_loss applies to kind sft")
    if task.assistant_only_loss and task.kind != "sft":
        raise ValueError("task.assistant_only_loss applies to kind sft")


def check_training(training: TrainingSection) -> None:
    if training.epochs is not None and training.max_steps is not None:
        raise ValueError("set training.epochs or training.max_steps, not both")
    if training.gradient_accumulation_steps is not None and training.global_batch_size is not None:
        raise ValueError(
            "set training.gradient_accumulation_steps or training.global_batch_size, not both"
        )
    if training.warmup_ratio is not None and training.warmup_steps is not None:
        raise ValueError("set training.warmup_ratio or training.warmup_steps, not both")
    if (
        training.global_batch_size is not None
        and training.global_batch_size % training.micro_batch_size
    ):
        raise ValueError(
            f"training.global_batch_size {training.global_batch_size} is not a multiple of "
            f"micro_batch_size {training.micro_batch_size}"
        )
    resume = training.resume
    if resume not in ("auto", "none") and not resume.strip():
        raise ValueError("training.resume is auto, none or a checkpoint path")


def check_distributed(dist: DistributedSection) -> None:
    if dist.fsdp is not None and dist.zero_stage not in (None, 0):
        raise ValueError(
            f"zero_stage {dist.zero_stage} and fsdp {dist.fsdp!r} are two ways to shard: "
            "set one of them (zero_stage: null with fsdp)"
        )
    if dist.fsdp is None and dist.zero_stage is None and dist.deepspeed_config is None:
        raise ValueError("set zero_stage (0-3), fsdp (full, grad-op, hybrid) or deepspeed_config")
    if dist.deepspeed_config is not None:
        if dist.fsdp is not None or (dist.zero_stage or 0) > 0:
            raise ValueError(
                "deepspeed_config is your own DeepSpeed JSON: leave zero_stage and fsdp unset "
                "(the JSON says the stage)"
            )
        if dist.offload_optimizer != "none" or dist.offload_params != "none":
            raise ValueError("with deepspeed_config, offload is set in that JSON, not here")
        if not dist.deepspeed_config.endswith(".json"):
            raise ValueError(f"deepspeed_config {dist.deepspeed_config!r} should be a .json file")
    if dist.offload_params != "none" and not (
        dist.zero_stage == 3 or dist.fsdp in ("full", "hybrid")
    ):
        raise ValueError("offload_params needs zero_stage 3 (or fsdp full/hybrid)")
    if dist.offload_optimizer != "none" and dist.zero_stage == 0:
        raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
    if dist.fsdp is not None and "nvme" in (dist.offload_optimizer, dist.offload_params):
        raise ValueError("FSDP offloads to cpu only; nvme offload needs zero_stage 3")
    if dist.fsdp is not None and dist.offload_optimizer != "none":
        raise ValueError("FSDP offloads parameters and optimizer together: use offload_params cpu")
    if "nvme" in (dist.offload_optimizer, dist.offload_params) and not dist.nvme_path:
        raise ValueError("offload to nvme needs distributed.nvme_path (a folder on local NVMe)")


def check_cluster(cluster: ClusterSection) -> None:
    if cluster.python is not None and cluster.venv is not None:
        raise ValueError("set cluster.python or cluster.venv, not both")
    seen: dict[tuple[str, int], int] = {}
    for i, node in enumerate(cluster.nodes):
        where = (node.address, node.port)
        if where in seen:
            raise ValueError(
                f"nodes[{i}] {node.address}:{node.port} is the same as nodes[{seen[where]}]"
            )
        seen[where] = i
    labels = [node.label for node in cluster.nodes]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes and any(node.name for node in cluster.nodes):
        raise ValueError(f"node names must be unique: {dupes}")


def check_recipe(recipe: Recipe) -> None:
    task, method, data, dist = recipe.task, recipe.method, recipe.data, recipe.distributed
    allowed = TASK_FORMATS[task.kind]
    if data.format != "auto" and data.format not in allowed:
        raise ValueError(
            f"task.kind {task.kind!r} trains on data.format {' or '.join(allowed)}, "
            f"not {data.format!r}"
        )
    if data.packing and task.kind not in ("sft", "pretrain"):
        raise ValueError(f"data.packing applies to sft and pretrain, not {task.kind!r}")
    if recipe.output.export_merged and method.kind not in ("lora", "qlora", "dora"):
        raise ValueError(
            f"output.export_merged merges a LoRA adapter; method.kind {method.kind!r} has none "
            "(its output is already full weights)"
        )
    if (
        recipe.training.optimizer in ("adamw-8bit", "paged-adamw-8bit")
        and dist.offload_optimizer != "none"
    ):
        raise ValueError(
            f"training.optimizer {recipe.training.optimizer!r} is bitsandbytes; DeepSpeed "
            "offload uses its own CPU Adam: use optimizer adamw with offload_optimizer"
        )
    if (
        recipe.cluster is not None
        and recipe.cluster.nodes
        and recipe.training.global_batch_size is not None
    ):
        recipe.training.accumulation_for(recipe.cluster.world_size)
