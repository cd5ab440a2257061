"""The recipe format: one YAML file that describes a training job.

Sections: model, method, task, data, training, distributed, cluster, output (and an optional
job `name`). Unknown keys are rejected with the closest accepted key; keys from LLaMA-Factory,
Axolotl and HF TrainingArguments are accepted where they mean the same (recipes/schema/aliases.py,
table in recipes/README.md). Cross-field rules live in recipes/schema/rules.py.

Light on purpose: pydantic, yaml and the standard library only (no torch), so the planner
and the launcher can validate a recipe instantly. Paths in a recipe are relative to the
directory the job runs in (the node's workdir), as with LLaMA-Factory and torchrun.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from planner.errors import UserInputError
from recipes.schema import rules as schema_rules
from recipes.schema.aliases import AliasError, normalize
from recipes.schema.chat_templates import check_chat_template_value
from recipes.schema.validation_messages import format_validation_error, section_fields

MethodKind = Literal["full", "freeze", "lora", "qlora", "dora"]
PrecisionKind = Literal["bf16-mixed", "bf16-pure", "fp16-mixed", "fp32"]
#: `adamw` is torch's fused AdamW (transformers' `adamw_torch_fused`: no temporaries at the
#: step), `adamw-foreach` transformers' `adamw_torch` (torch's foreach kernels on CUDA).
OptimizerKind = Literal[
    "adamw", "adamw-foreach", "adamw-8bit", "paged-adamw-8bit", "adafactor", "sgd"
]
OffloadKind = Literal["none", "cpu", "nvme"]
FsdpKind = Literal["full", "grad-op", "hybrid"]
TaskKind = Literal["sft", "pretrain", "dpo", "kto", "orpo", "simpo", "grpo", "reward"]
DataFormat = Literal[
    "auto",
    "text",
    "messages",
    "prompt/completion",
    "prompt/chosen/rejected",
    "prompt/completion/label",
    "prompt",
]
FileFormat = Literal["auto", "jsonl", "json", "parquet", "csv", "hf-disk"]
SchedulerKind = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
]
ReportKind = Literal["none", "tensorboard", "wandb"]
#: Canonical column roles; data.columns maps a role to the column name in the user's file.
COLUMN_ROLES = ("text", "messages", "prompt", "completion", "chosen", "rejected", "label")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TinyModelSection(_Section):
    """A model built from a small config, its tokenizer trained on the spot on the training data.

    For demos and tests without downloads: the model is written once to
    `<output.dir>/tiny-base/` and then loaded like any local model.
    """

    config: dict[str, Any] = Field(description="transformers config keys; needs model_type")
    vocab_size: int = Field(512, ge=300, le=65536, description="BPE vocabulary (byte-level)")
    seed: int = Field(0, description="seed of the random initial weights")

    @field_validator("config")
    @classmethod
    def _has_model_type(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("model_type"), str):
            raise ValueError("needs a model_type, e.g. {model_type: llama, hidden_size: 64, ...}")
        if "vocab_size" in value:
            raise ValueError("vocab_size comes from the tokenizer: set model.tiny.vocab_size")
        return value


class ModelSection(_Section):
    name: str = Field(min_length=1, description="HF model id, local path, or a label for tiny")
    revision: str = "main"
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = Field(
        "bfloat16", description="dtype the base weights are loaded in"
    )
    trust_remote_code: bool = False
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = "sdpa"
    tokenizer: str | None = Field(None, description="tokenizer id or path; default: the model's")
    tiny: TinyModelSection | None = None


class LoraSection(_Section):
    rank: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = Field(
        "all-linear", description="'all-linear' or module names (q_proj, v_proj, ...)"
    )
    use_rslora: bool = Field(False, description="scale by alpha/sqrt(rank) (rsLoRA)")
    init: Literal["default", "gaussian", "pissa", "loftq"] = "default"
    modules_to_save: list[str] = Field(
        default_factory=list, description="modules trained in full beside the adapter"
    )

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one module name, or 'all-linear'")
        return value


class MethodSection(_Section):
    kind: MethodKind = "lora"
    lora: LoraSection = LoraSection()
    freeze_trainable_layers: int = Field(
        2, description="freeze: train the last N decoder layers (negative: the first |N|)"
    )
    freeze_trainable_modules: Literal["all"] | list[str] = Field(
        "all", description="freeze: inside those layers, train these modules (mlp, self_attn)"
    )
    freeze_extra_modules: list[str] = Field(
        default_factory=list, description="freeze: also train these (embed_tokens, lm_head)"
    )
    quantization_bits: Literal[4, 8] = 4
    quantization_type: Literal["nf4", "fp4"] = "nf4"
    double_quantization: bool = True

    @field_validator("freeze_trainable_layers")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 layers would train nothing: use N > 0 (last N) or N < 0 (first N)")
        return value

    @model_validator(mode="after")
    def _init_fits_kind(self) -> MethodSection:
        schema_rules.check_method(self)
        return self


class GrpoSection(_Section):
    rewards: list[str] = Field(
        min_length=1,
        description="format | length:N | regex:PATTERN | module:function (see recipes/README.md)",
    )
    reward_weights: list[float] | None = None
    num_generations: int = Field(8, ge=2, description="completions sampled per prompt")
    max_completion_length: int = Field(256, gt=0, description="tokens")
    temperature: float = Field(1.0, gt=0.0)

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, value: list[str]) -> list[str]:
        for reward in value:
            schema_rules.check_reward_name(reward)
        return value

    @model_validator(mode="after")
    def _weights(self) -> GrpoSection:
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} entries for "
                f"{len(self.rewards)} rewards"
            )
        return self


class TaskSection(_Section):
    kind: TaskKind = "sft"
    completion_only_loss: bool | None = Field(
        None, description="sft prompt/completion: loss on the completion only (default true)"
    )
    assistant_only_loss: bool = Field(False, description="sft messages: loss on assistant turns")
    beta: float | None = Field(
        None, ge=0.0, description="dpo/kto/orpo/simpo strength, grpo KL weight; default: TRL's"
    )
    simpo_gamma: float | None = Field(None, ge=0.0, description="simpo target reward margin")
    grpo: GrpoSection | None = None

    @model_validator(mode="after")
    def _task_options(self) -> TaskSection:
        schema_rules.check_task(self)
        return self


class DataSection(_Section):
    train: str | list[str] | None = Field(
        None, description="file(s) (.jsonl .json .parquet .csv) or a saved HF datasets folder"
    )
    eval: str | list[str] | None = None
    eval_split: float | int | None = Field(
        None, description="hold out this fraction (0-1) or this many examples of train for eval"
    )
    file_format: FileFormat = "auto"
    format: DataFormat = "auto"
    columns: dict[str, str] = Field(
        default_factory=dict, description="role -> column name in the file, e.g. prompt: question"
    )
    split: str = Field("train", description="split to read from a saved DatasetDict")
    chat_template: str | None = Field(
        None, description="'model' (the tokenizer's), 'chatml', a .jinja path or a Jinja string"
    )
    packing: bool = False
    num_proc: int | None = Field(None, gt=0)
    max_samples: int | None = Field(None, gt=0, description="use only the first N examples")

    @field_validator("chat_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        check_chat_template_value(value)
        return value

    @field_validator("columns")
    @classmethod
    def _roles(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if k not in COLUMN_ROLES]
        if bad:
            raise ValueError(f"unknown role(s) {bad}: roles are {', '.join(COLUMN_ROLES)}")
        return value

    @field_validator("eval_split")
    @classmethod
    def _split(cls, value: float | int | None) -> float | int | None:
        if isinstance(value, float) and not 0.0 < value < 1.0:
            raise ValueError("a fraction must be between 0 and 1 (or give a count of examples)")
        if isinstance(value, int) and value < 1:
            raise ValueError("a count of examples must be at least 1")
        return value

    @model_validator(mode="after")
    def _one_eval(self) -> DataSection:
        if self.eval is not None and self.eval_split is not None:
            raise ValueError("set data.eval (a file) or data.eval_split, not both")
        return self

    def train_paths(self) -> list[str]:
        return [self.train] if isinstance(self.train, str) else list(self.train or [])

    def eval_paths(self) -> list[str]:
        return [self.eval] if isinstance(self.eval, str) else list(self.eval or [])


class TrainingSection(_Section):
    epochs: float | None = Field(None, gt=0, description="default 1 when max_steps is not set")
    max_steps: int | None = Field(None, gt=0)
    micro_batch_size: int = Field(1, gt=0, description="sequences per GPU per forward")
    gradient_accumulation_steps: int | None = Field(None, gt=0)
    global_batch_size: int | None = Field(
        None, gt=0, description="micro batch x accumulation x GPUs; accumulation derived"
    )
    seq_len: int = Field(2048, gt=0, description="max tokens per sequence (truncate or pack)")
    learning_rate: float | None = Field(
        None, gt=0, description="default 2e-4 for LoRA/QLoRA/DoRA, 1e-5 for full/freeze"
    )
    lr_scheduler: SchedulerKind = "cosine"
    warmup_ratio: float | None = Field(None, ge=0.0, lt=1.0)
    warmup_steps: int | None = Field(None, ge=0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, ge=0.0, description="0 disables clipping")
    precision: PrecisionKind = "bf16-mixed"
    optimizer: OptimizerKind = "adamw"
    gradient_checkpointing: bool = True
    fused_ce: bool = Field(False, description="Liger kernels (fused linear cross-entropy)")
    seed: int = 42
    logging_steps: int = Field(10, gt=0)
    save_steps: int = Field(500, gt=0)
    save_total_limit: int | None = Field(None, gt=0)
    eval_steps: int | None = Field(None, gt=0, description="default: save_steps when eval data")
    resume: str = Field("auto", min_length=1, description="auto | none | a checkpoint path")
    nan_policy: Literal["stop", "ignore"] = Field(
        "stop", description="stop: a NaN/inf loss ends the run with an error"
    )

    @model_validator(mode="after")
    def _exclusive(self) -> TrainingSection:
        schema_rules.check_training(self)
        return self

    def default_learning_rate(self, method: MethodKind) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 if method in ("lora", "qlora", "dora") else 1e-5

    def accumulation_for(self, world_size: int) -> int:
        """Gradient accumulation steps for this many data-parallel ranks."""
        if self.global_batch_size is None:
            return self.gradient_accumulation_steps or 1
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"training.global_batch_size {self.global_batch_size} is not a multiple of "
                f"micro_batch_size {self.micro_batch_size} x {world_size} GPUs = {per_step}"
            )
        return self.global_batch_size // per_step


class DistributedSection(_Section):
    zero_stage: Literal[0, 1, 2, 3] | None = Field(
        0, description="0: plain DDP; 1-3: DeepSpeed ZeRO with a generated config"
    )
    fsdp: FsdpKind | None = None
    offload_optimizer: OffloadKind = "none"
    offload_params: OffloadKind = "none"
    nvme_path: str | None = Field(None, description="folder for offload to nvme")
    deepspeed_config: str | None = Field(None, description="your own DeepSpeed JSON instead")
    fsdp_state_dict: Literal["full", "sharded"] = Field(
        "full", description="FSDP2 checkpoint format: one HF file, or one shard per rank"
    )
    timeout_s: int = Field(1800, gt=0, description="collective timeout (seconds)")

    @model_validator(mode="before")
    @classmethod
    def _fsdp_means_no_zero(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("fsdp") is not None and "zero_stage" not in data:
            return {**data, "zero_stage": None}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DistributedSection:
        schema_rules.check_distributed(self)
        return self

    @property
    def uses_deepspeed(self) -> bool:
        return self.deepspeed_config is not None or (self.zero_stage or 0) > 0


_NODE = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<address>[^@:\s]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?$"
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NodeSection(_Section):
    address: str = Field(min_length=1, description="host name or IP")
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None
    key: str | None = Field(None, description="SSH private key file")
    name: str | None = Field(None, description="label in logs; default: the address")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        """`user@host:port` is shorthand for {address, user, port}."""
        if not isinstance(data, str):
            return data
        match = _NODE.match(data.strip())
        if match is None:
            raise ValueError(f"{data!r} is not 'host', 'user@host' or 'user@host:port'")
        out: dict[str, Any] = {"address": match["address"].strip("[]")}
        if match["user"]:
            out["user"] = match["user"]
        if match["port"]:
            out["port"] = int(match["port"])
        return out

    @property
    def label(self) -> str:
        return self.name or self.address


class ClusterSection(_Section):
    nodes: list[NodeSection] = Field(
        default_factory=list, description="the nodes; may be left out when --hostfile gives them"
    )
    gpus_per_node: int = Field(8, gt=0)
    env: dict[str, str] = Field(default_factory=dict, description="set on every node")
    workdir: str = Field("~/tuneboard", min_length=1, description="job folder on each node")
    python: str | None = Field(None, description="python on the nodes; default python3")
    venv: str | None = Field(None, description="or a virtualenv folder on the nodes")
    shared_fs: bool = Field(False, description="workdir is one shared filesystem (NFS...)")
    master_port: int = Field(29500, ge=1, le=65535)

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for name, val in value.items():
            if not _ENV_NAME.match(str(name)):
                raise ValueError(f"{name!r} is not an environment variable name")
            out[str(name)] = (
                str(val).lower() if isinstance(val, bool) else str(val) if val is not None else ""
            )
        return out

    @model_validator(mode="after")
    def _nodes(self) -> ClusterSection:
        schema_rules.check_cluster(self)
        return self

    @property
    def world_size(self) -> int:
        return len(self.nodes) * self.gpus_per_node


def _no_reporting() -> list[ReportKind]:
    return ["none"]


class OutputSection(_Section):
    dir: str = Field("output", min_length=1, description="checkpoints, metrics.jsonl, status")
    report_to: list[ReportKind] = Field(default_factory=_no_reporting)
    export_merged: bool = Field(False, description="LoRA methods: also save merged weights")

    @field_validator("report_to", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("report_to")
    @classmethod
    def _none_alone(cls, value: list[ReportKind]) -> list[ReportKind]:
        if "none" in value and len(value) > 1:
            raise ValueError("'none' cannot be combined with other reporters")
        return value or ["none"]


class Recipe(_Section):
    name: str | None = Field(None, description="job name; default: the recipe file's stem")
    model: ModelSection
    method: MethodSection = MethodSection()
    task: TaskSection = TaskSection()
    data: DataSection = DataSection()
    training: TrainingSection = TrainingSection()
    distributed: DistributedSection = DistributedSection()
    cluster: ClusterSection | None = None
    output: OutputSection = OutputSection()

    @model_validator(mode="after")
    def _across_sections(self) -> Recipe:
        schema_rules.check_recipe(self)
        return self


class RecipeError(UserInputError):
    """A recipe that does not validate; the message names each bad key."""


SECTIONS = section_fields(Recipe)


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """Validate a mapping (aliases allowed) into a Recipe, or raise RecipeError."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with a 'model:' key")
    try:
        normalized = normalize(data, SECTIONS)
    except AliasError as exc:
        raise RecipeError(f"{source}: {exc}") from None
    try:
        return Recipe.model_validate(normalized.data)
    except ValidationError as exc:
        raise RecipeError(
            format_validation_error(exc, source, Recipe, normalized.written_as)
        ) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (value parsed as YAML) to a raw recipe mapping."""
    import yaml

    out: dict[str, Any] = dict(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {item!r}: write it as section.key=value")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(text) if text else None
        except yaml.YAMLError as exc:
            raise RecipeError(f"override {item!r}: value is not valid YAML ({exc})") from None
    return out


def read_recipe_mapping(path: str | Path) -> dict[str, Any]:
    """The raw YAML mapping of a recipe file (before aliases and validation)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise RecipeError(f"{p}: is a folder, not a recipe file") from None
    return recipe_mapping_from_text(text, str(p))


def recipe_mapping_from_text(text: str, source: str) -> dict[str, Any]:
    """The raw YAML mapping of a recipe's text; `source` names it in errors."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with a 'model:' key")
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, apply `key=value` overrides, resolve aliases and validate a recipe file."""
    data = read_recipe_mapping(path)
    if overrides:
        data = apply_overrides(data, overrides)
    recipe = parse_recipe(data, str(path))
    if recipe.name is None:
        recipe = recipe.model_copy(update={"name": Path(path).stem})
    return recipe


def dump_recipe(recipe: Recipe, header: str = "") -> str:
    """The recipe as canonical YAML (every key, aliases resolved), after an optional header."""
    import yaml

    body = yaml.safe_dump(
        recipe.model_dump(mode="json", exclude_defaults=False), sort_keys=False, allow_unicode=True
    )
    return header + body
