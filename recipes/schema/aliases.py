"""Keys from LLaMA-Factory, Axolotl, TRL and HF TrainingArguments, mapped onto the recipe.

A recipe is written in sections (`model:`, `method:`, `training:` ...). Users coming from
LLaMA-Factory or Axolotl write flat keys (`model_name_or_path`, `lora_rank`, `cutoff_len`,
`per_device_train_batch_size`); they are accepted where the meaning is the same, at the top
level or inside any section, and moved to their canonical place before validation.
`normalize()` does that and records where each value came from, so that an error names the
key the user wrote. The table below is also rendered into recipes/README.md.

Pure standard library: imported by recipes.schema, which must stay light.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

Path_ = tuple[str, ...]


class _Drop:
    """Returned by a converter when the alias has no effect for this value (e.g. `bf16: false`)."""

    def __repr__(self) -> str:
        return "DROP"


DROP: Final = _Drop()


class AliasError(ValueError):
    """An alias whose value cannot be translated, or two keys that disagree."""


def _comma_list(value: Any) -> Any:
    """LLaMA-Factory writes lists as comma-separated strings: 'q_proj,v_proj'."""
    if isinstance(value, str) and "," in value:
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _lora_target(value: Any) -> Any:
    if value == "all":
        return "all-linear"
    return _comma_list(value)


def _when_true(result: Any) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is True:
            return result
        if value is False or value is None:
            return DROP
        return value  # not a bool: let validation name the bad value

    return convert


def _mapping(
    table: Mapping[Any, Any], unsupported: Mapping[Any, str] | None = None
) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if unsupported and value in unsupported:
            raise AliasError(unsupported[value])
        return table.get(value, value)

    return convert


def _invert(value: Any) -> Any:
    return (not value) if isinstance(value, bool) else value


def _resume(value: Any) -> Any:
    if value is True:
        return "auto"
    if value is False or value is None:
        return "none"
    return value


def _percent(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 100.0
    return value


def _init_lora(value: Any) -> Any:
    if value is True:
        return "default"
    return value


@dataclass(frozen=True)
class Alias:
    """One foreign key: where its value goes, how it is translated, and who uses that name."""

    targets: tuple[tuple[Path_, Callable[[Any], Any] | None], ...]
    origin: str
    note: str = ""

    @property
    def target_text(self) -> str:
        return ", ".join(".".join(path) for path, _ in self.targets)


def _a(
    target: str, origin: str, convert: Callable[[Any], Any] | None = None, note: str = ""
) -> Alias:
    return Alias(((tuple(target.split(".")), convert),), origin, note)


_OPTIM = _mapping(
    {
        "adamw_torch": "adamw-foreach",
        "adamw_torch_fused": "adamw",
        "adamw_hf": "adamw",
        "adamw_bnb_8bit": "adamw-8bit",
        "adamw_8bit": "adamw-8bit",
        "paged_adamw_8bit": "paged-adamw-8bit",
    }
)

#: Foreign key -> canonical place. Valid at the top level and inside any section.
ALIASES: Final[dict[str, Alias]] = {
    # model
    "model_name_or_path": _a("model.name", "LLaMA-Factory, HF"),
    "base_model": _a("model.name", "Axolotl"),
    "model_revision": _a("model.revision", "LLaMA-Factory"),
    "revision_of_model": _a("model.revision", "Axolotl"),
    "trust_remote_code": _a("model.trust_remote_code", "LLaMA-Factory, Axolotl"),
    "attn_implementation": _a("model.attn_implementation", "HF, Axolotl"),
    "flash_attn": _a(
        "model.attn_implementation",
        "LLaMA-Factory",
        _mapping({"fa2": "flash_attention_2", "disabled": "eager", "auto": "sdpa"}),
        "fa2 -> flash_attention_2, disabled -> eager, auto -> sdpa",
    ),
    "torch_dtype": _a("model.dtype", "HF"),
    "infer_dtype": _a("model.dtype", "LLaMA-Factory"),
    "tokenizer_name": _a("model.tokenizer", "HF run_clm"),
    "tokenizer_config": _a("model.tokenizer", "Axolotl"),
    # method
    "finetuning_type": _a("method.kind", "LLaMA-Factory"),
    "adapter": _a("method.kind", "Axolotl"),
    "use_dora": _a("method.kind", "LLaMA-Factory, PEFT", _when_true("dora"), "true -> dora"),
    "peft_use_dora": _a("method.kind", "Axolotl", _when_true("dora"), "true -> dora"),
    "lora_rank": _a("method.lora.rank", "LLaMA-Factory"),
    "lora_r": _a("method.lora.rank", "Axolotl"),
    "lora_alpha": _a("method.lora.alpha", "LLaMA-Factory, Axolotl, PEFT"),
    "lora_dropout": _a("method.lora.dropout", "LLaMA-Factory, Axolotl, PEFT"),
    "lora_target": _a(
        "method.lora.target_modules",
        "LLaMA-Factory",
        _lora_target,
        "all -> all-linear; a,b -> list",
    ),
    "lora_target_modules": _a("method.lora.target_modules", "Axolotl"),
    "lora_target_linear": _a(
        "method.lora.target_modules", "Axolotl", _when_true("all-linear"), "true -> all-linear"
    ),
    "use_rslora": _a("method.lora.use_rslora", "LLaMA-Factory, PEFT"),
    "peft_use_rslora": _a("method.lora.use_rslora", "Axolotl"),
    "pissa_init": _a("method.lora.init", "LLaMA-Factory", _when_true("pissa"), "true -> pissa"),
    "additional_target": _a("method.lora.modules_to_save", "LLaMA-Factory", _comma_list),
    "lora_modules_to_save": _a("method.lora.modules_to_save", "Axolotl"),
    "freeze_trainable_layers": _a("method.freeze_trainable_layers", "LLaMA-Factory"),
    "freeze_trainable_modules": _a("method.freeze_trainable_modules", "LLaMA-Factory", _comma_list),
    "freeze_extra_modules": _a("method.freeze_extra_modules", "LLaMA-Factory", _comma_list),
    "quantization_bit": Alias(
        ((("method", "quantization_bits"), None), (("method", "kind"), lambda _v: "qlora")),
        "LLaMA-Factory",
        "also makes a LoRA recipe QLoRA",
    ),
    "load_in_4bit": Alias(
        (
            (("method", "quantization_bits"), _when_true(4)),
            (("method", "kind"), _when_true("qlora")),
        ),
        "Axolotl, HF",
        "true -> 4-bit QLoRA",
    ),
    "load_in_8bit": Alias(
        (
            (("method", "quantization_bits"), _when_true(8)),
            (("method", "kind"), _when_true("qlora")),
        ),
        "Axolotl, HF",
        "true -> 8-bit QLoRA",
    ),
    "quantization_type": _a("method.quantization_type", "LLaMA-Factory"),
    "bnb_4bit_quant_type": _a("method.quantization_type", "HF BitsAndBytesConfig"),
    "double_quantization": _a("method.double_quantization", "LLaMA-Factory"),
    "bnb_4bit_use_double_quant": _a("method.double_quantization", "HF BitsAndBytesConfig"),
    # task
    "stage": _a(
        "task.kind",
        "LLaMA-Factory",
        _mapping(
            {"pt": "pretrain", "rm": "reward"},
            {"ppo": "stage 'ppo' is not supported: use task.kind grpo (online RL) or dpo"},
        ),
        "pt -> pretrain, rm -> reward",
    ),
    "rl": _a(
        "task.kind",
        "Axolotl",
        _mapping({}, {"ipo": "rl 'ipo' is not supported: use task.kind dpo"}),
    ),
    "pref_beta": _a("task.beta", "LLaMA-Factory"),
    "rl_beta": _a("task.beta", "Axolotl"),
    "simpo_gamma": _a("task.simpo_gamma", "LLaMA-Factory"),
    "train_on_prompt": _a(
        "task.completion_only_loss", "LLaMA-Factory", _invert, "inverted: true -> false"
    ),
    "train_on_inputs": _a("task.completion_only_loss", "Axolotl", _invert, "inverted"),
    # data
    "train_file": _a("data.train", "HF run_clm"),
    "validation_file": _a("data.eval", "HF run_clm"),
    "val_size": _a("data.eval_split", "LLaMA-Factory"),
    "val_set_size": _a("data.eval_split", "Axolotl"),
    "validation_split_percentage": _a("data.eval_split", "HF run_clm", _percent, "percent"),
    "packing": _a("data.packing", "LLaMA-Factory, TRL"),
    "sample_packing": _a("data.packing", "Axolotl"),
    "chat_template": _a(
        "data.chat_template",
        "Axolotl",
        _mapping({"tokenizer_default": "model"}),
        "tokenizer_default -> model",
    ),
    "preprocessing_num_workers": _a("data.num_proc", "LLaMA-Factory, HF"),
    "dataset_processes": _a("data.num_proc", "Axolotl"),
    "dataset_num_proc": _a("data.num_proc", "TRL"),
    "max_samples": _a("data.max_samples", "LLaMA-Factory"),
    # training
    "cutoff_len": _a("training.seq_len", "LLaMA-Factory"),
    "sequence_len": _a("training.seq_len", "Axolotl"),
    "max_seq_length": _a("training.seq_len", "TRL < 0.20"),
    "max_length": _a("training.seq_len", "TRL"),
    "block_size": _a("training.seq_len", "HF run_clm"),
    "per_device_train_batch_size": _a("training.micro_batch_size", "HF, LLaMA-Factory"),
    "micro_batch_size": _a("training.micro_batch_size", "Axolotl"),
    "gradient_accumulation_steps": _a("training.gradient_accumulation_steps", "HF, both"),
    "num_train_epochs": _a("training.epochs", "HF, LLaMA-Factory"),
    "num_epochs": _a("training.epochs", "Axolotl"),
    "max_steps": _a("training.max_steps", "HF, both"),
    "learning_rate": _a("training.learning_rate", "HF, both"),
    "lr_scheduler_type": _a("training.lr_scheduler", "HF, LLaMA-Factory"),
    "lr_scheduler": _a("training.lr_scheduler", "Axolotl"),
    "warmup_ratio": _a("training.warmup_ratio", "HF, both"),
    "warmup_steps": _a("training.warmup_steps", "HF, both"),
    "weight_decay": _a("training.weight_decay", "HF, both"),
    "max_grad_norm": _a("training.max_grad_norm", "HF, both"),
    "optim": _a(
        "training.optimizer",
        "HF, LLaMA-Factory",
        _OPTIM,
        "adamw_torch_fused -> adamw, adamw_torch -> adamw-foreach, ...",
    ),
    "optimizer": _a("training.optimizer", "Axolotl", _OPTIM),
    "bf16": _a("training.precision", "HF, both", _when_true("bf16-mixed"), "true -> bf16-mixed"),
    "fp16": _a("training.precision", "HF, both", _when_true("fp16-mixed"), "true -> fp16-mixed"),
    "pure_bf16": _a("training.precision", "LLaMA-Factory", _when_true("bf16-pure")),
    "gradient_checkpointing": _a("training.gradient_checkpointing", "HF, both"),
    "seed": _a("training.seed", "HF, both"),
    "logging_steps": _a("training.logging_steps", "HF, both"),
    "save_steps": _a("training.save_steps", "HF, both"),
    "save_total_limit": _a("training.save_total_limit", "HF, both"),
    "eval_steps": _a("training.eval_steps", "HF, both"),
    "resume_from_checkpoint": _a(
        "training.resume", "HF, both", _resume, "true -> auto, false/null -> none"
    ),
    "use_liger_kernel": _a("training.fused_ce", "HF"),
    "enable_liger_kernel": _a("training.fused_ce", "LLaMA-Factory"),
    # distributed
    "deepspeed": _a("distributed.deepspeed_config", "HF, both"),
    "ddp_timeout": _a("distributed.timeout_s", "HF, LLaMA-Factory"),
    # output
    "output_dir": _a("output.dir", "HF, both"),
    "report_to": _a("output.report_to", "HF, both"),
    "run_name": _a("name", "HF"),
}

#: Aliases that only make sense inside one section (PEFT's own names inside `method.lora`).
SCOPED_ALIASES: Final[dict[Path_, dict[str, Alias]]] = {
    ("method", "lora"): {
        "r": _a("method.lora.rank", "PEFT"),
        "init_lora_weights": _a("method.lora.init", "PEFT", _init_lora),
    },
}

#: Keys other tools need that have no effect here; accepted and dropped (only at the top level).
NO_OP_KEYS: Final[dict[str, str]] = {
    "do_train": "training is what a recipe does",
    "plot_loss": "metrics.jsonl is always written; the dashboard plots it",
    "overwrite_cache": "datasets are prepared in memory",
}

#: Known foreign keys with a different meaning here: rejected with an explanation.
FOREIGN_HINTS: Final[dict[str, str]] = {
    "dataset": "names in LLaMA-Factory's dataset_info.json are not read: "
    "set data.train to a local .jsonl/.json/.parquet/.csv file or a saved HF datasets folder",
    "dataset_dir": "set data.train to the file or saved HF datasets folder itself",
    "datasets": "Axolotl dataset entries are not read: set data.train to a local file "
    "and data.format (text, messages, prompt/completion, ...)",
    "template": "LLaMA-Factory template names are not used: data.chat_template is 'model' "
    "(the tokenizer's own), 'chatml', or a Jinja string",
    "overwrite_output_dir": "use training.resume: none to start over in the same output.dir",
}

#: When two keys set method.kind, these pairs refine each other instead of conflicting
#: (LLaMA-Factory: finetuning_type lora + quantization_bit 4 = QLoRA; + use_dora = DoRA).
_REFINES: Final[dict[Path_, dict[frozenset[Any], Any]]] = {
    ("method", "kind"): {
        frozenset({"lora", "qlora"}): "qlora",
        frozenset({"lora", "dora"}): "dora",
    },
}

#: Shorthands: `model: Qwen/Qwen2.5-7B`, `method: lora`, `task: sft`.
SHORTHANDS: Final[dict[str, str]] = {"model": "name", "method": "kind", "task": "kind"}


@dataclass
class Normalized:
    """The recipe mapping in canonical sections, and for each moved value the key the user wrote."""

    data: dict[str, Any]
    written_as: dict[Path_, str] = field(default_factory=dict)


def _walk_sections(
    mapping: dict[str, Any], here: Path_, sections: Mapping[Path_, frozenset[str]]
) -> tuple[dict[str, Any], list[tuple[str, Path_, Any]]]:
    """Split one mapping into kept keys and alias assignments (alias key, target, raw value)."""
    kept: dict[str, Any] = {}
    moved: list[tuple[str, Path_, Any]] = []
    fields = sections.get(here, frozenset())
    scoped = SCOPED_ALIASES.get(here, {})
    for key, value in mapping.items():
        key_s = str(key)
        child = (*here, key_s)
        if key_s in fields:
            if child in sections and isinstance(value, dict):
                sub_kept, sub_moved = _walk_sections(value, child, sections)
                kept[key_s] = sub_kept
                moved.extend(sub_moved)
            else:
                kept[key_s] = value
        elif key_s in scoped or key_s in ALIASES:
            moved.append((key_s, here, value))
        elif not here and key_s in NO_OP_KEYS and value is not False:
            continue
        else:
            kept[key_s] = value
    return kept, moved


def _get(data: dict[str, Any], path: Path_) -> Any:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return DROP
        node = node[part]
    return node


def _set(data: dict[str, Any], path: Path_, value: Any) -> None:
    node = data
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value


def normalize(raw: Mapping[str, Any], sections: Mapping[Path_, frozenset[str]]) -> Normalized:
    """Move alias keys to their canonical place.

    `sections` maps each section path (the top level is `()`) to its canonical field names.
    Raises AliasError when an alias value cannot be used or two keys disagree.
    """
    data = dict(raw)
    for name, sub_key in SHORTHANDS.items():
        if isinstance(data.get(name), str):
            data[name] = {sub_key: data[name]}
    kept, moved = _walk_sections(data, (), sections)
    result = Normalized(kept)
    for alias_key, here, raw_value in moved:
        alias = SCOPED_ALIASES.get(here, {}).get(alias_key) or ALIASES[alias_key]
        for target, convert in alias.targets:
            value = convert(raw_value) if convert is not None else raw_value
            if value is DROP:
                continue
            written = ".".join((*here, alias_key))
            existing = _get(result.data, target)
            if existing is not DROP and existing != value:
                refined = _REFINES.get(target, {}).get(frozenset({existing, value}))
                if refined is None:
                    other = result.written_as.get(target, ".".join(target))
                    raise AliasError(
                        f"{'.'.join(target)}: {other} says {existing!r} but {written} says "
                        f"{value!r}; keep one of them"
                    )
                value = refined
            _set(result.data, target, value)
            result.written_as[target] = written
    return result


def alias_table_markdown() -> str:
    """The alias table as Markdown (for recipes/README.md; a test keeps the two in sync)."""
    lines = ["| key you may write | canonical key | used by | note |", "|---|---|---|---|"]
    for key, alias in ALIASES.items():
        lines.append(f"| `{key}` | `{alias.target_text}` | {alias.origin} | {alias.note} |")
    for scope, table in SCOPED_ALIASES.items():
        for key, alias in table.items():
            where = ".".join(scope)
            lines.append(
                f"| `{key}` (inside `{where}`) | `{alias.target_text}` | {alias.origin} | "
                f"{alias.note} |"
            )
    return "\n".join(lines) + "\n"
