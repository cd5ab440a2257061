"""The recipe format: one YAML file that describes a training job.

This part covers what the planner decides: the model, the fine-tuning method,
the training shape (batch, length, precision, optimizer, checkpointing) and the
distribution (ZeRO / FSDP, offload). The recipes issue adds task, data, cluster
and output. Unknown keys are rejected with the closest accepted key.

Light on purpose: pydantic and the standard library only (no torch), so the
planner and the launcher can validate a recipe instantly.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MethodKind = Literal["full", "freeze", "lora", "qlora", "dora"]
PrecisionKind = Literal["bf16-mixed", "bf16-pure", "fp16-mixed", "fp32"]
OptimizerKind = Literal["adamw", "adamw-8bit", "paged-adamw-8bit", "adafactor", "sgd"]
OffloadKind = Literal["none", "cpu", "nvme"]
FsdpKind = Literal["full", "grad-op", "hybrid"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ModelSection(_Section):
    name: str = Field(min_length=1, description="HF model id, local path or catalog name")
    revision: str = "main"
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "bfloat16"
    trust_remote_code: bool = False
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = "sdpa"


class LoraSection(_Section):
    rank: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    use_rslora: bool = False


class MethodSection(_Section):
    kind: MethodKind = "lora"
    lora: LoraSection = LoraSection()
    freeze_trainable_layers: int = Field(2, gt=0)
    quantization_bits: Literal[4, 8] = 4


class TrainingSection(_Section):
    micro_batch_size: int = Field(1, gt=0)
    global_batch_size: int | None = Field(None, gt=0)
    seq_len: int = Field(2048, gt=0)
    precision: PrecisionKind = "bf16-mixed"
    optimizer: OptimizerKind = "adamw"
    gradient_checkpointing: bool = True
    fused_ce: bool = False


class DistributedSection(_Section):
    zero_stage: Literal[0, 1, 2, 3] | None = 2
    fsdp: FsdpKind | None = None
    offload_optimizer: OffloadKind = "none"
    offload_params: OffloadKind = "none"

    @model_validator(mode="after")
    def _consistent(self) -> DistributedSection:
        if self.fsdp is not None and self.zero_stage is not None:
            raise ValueError(
                f"zero_stage {self.zero_stage} and fsdp {self.fsdp!r} are two ways to shard: "
                "set one of them to null"
            )
        if self.fsdp is None and self.zero_stage is None:
            raise ValueError("set zero_stage (0-3) or fsdp (full, grad-op, hybrid)")
        if self.offload_params != "none" and not (
            self.zero_stage == 3 or self.fsdp in ("full", "hybrid")
        ):
            raise ValueError("offload_params needs zero_stage 3 (or fsdp full/hybrid)")
        if self.offload_optimizer != "none" and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


class Recipe(_Section):
    model: ModelSection
    method: MethodSection = MethodSection()
    training: TrainingSection = TrainingSection()
    distributed: DistributedSection = DistributedSection()


class RecipeError(ValueError):
    """A recipe that does not validate; the message names each bad key."""


def _known_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel]:
    current: type[BaseModel] = Recipe
    for part in loc:
        field = current.model_fields.get(str(part))
        if field is None:
            break
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            current = annotation
        else:
            break
    return current


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            section = _section_model(loc[:-1])
            known = _known_keys(section)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"{source}: unknown key {key!r}{hint}; accepted: {', '.join(known)}")
        else:
            lines.append(f"{source}: {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, source)) from None


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{p}: no such file") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe is a YAML mapping with a 'model:' key")
    return parse_recipe(data, str(p))


def dump_recipe(recipe: Recipe, header: str = "") -> str:
    import yaml

    body = yaml.safe_dump(
        recipe.model_dump(mode="json", exclude_defaults=False), sort_keys=False, allow_unicode=True
    )
    return header + body
