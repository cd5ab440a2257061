"""Write the planner's recommendation out as a recipe (recipes/schema/recipe.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from planner.errors import PlannerInputError
from planner.search import Plan
from recipes.schema import (
    DistributedSection,
    LoraSection,
    MethodSection,
    ModelSection,
    Recipe,
    TrainingSection,
    dump_recipe,
)
from recipes.schema.validation_messages import format_validation_error

GIB = 1024**3


def recipe_from_plan(plan: Plan) -> Recipe:
    rec = plan.recommendation
    if rec is None:
        raise PlannerInputError("--write: nothing fits, so there is no recommendation to write")
    s = rec.setup
    if s.optimizer == "adamw-single":
        raise PlannerInputError(
            "--write: --optimizer adamw-single is torch's single-tensor loop (what a CPU run "
            "takes), which a recipe cannot ask for: plan with adamw (fused, the default) or "
            "adamw-foreach"
        )
    model_name = plan.model.hf_id or plan.model.name
    dtype = (
        "float32"
        if s.precision == "fp32"
        else ("float16" if s.precision == "fp16-mixed" else "bfloat16")
    )
    attn = {"sdpa": "sdpa", "flash": "flash_attention_2", "eager": "eager"}[s.attention]
    try:
        return _build(plan, model_name, dtype, attn)
    except ValidationError as exc:
        message = format_validation_error(exc, "--write", Recipe)
        raise PlannerInputError(f"the recommended setup is not a valid recipe: {message}") from None


def _build(plan: Plan, model_name: str, dtype: str, attn: str) -> Recipe:
    rec = plan.recommendation
    assert rec is not None
    s = rec.setup
    return Recipe(
        model=ModelSection(name=model_name, dtype=dtype, attn_implementation=attn),
        method=MethodSection(
            kind=s.method,
            lora=LoraSection(
                rank=s.lora_rank,
                alpha=2 * s.lora_rank,
                dropout=s.lora_dropout,
                target_modules=s.lora_targets,
            ),
            freeze_trainable_layers=s.freeze_trainable_layers,
        ),
        training=TrainingSection(
            micro_batch_size=s.micro_batch_size,
            global_batch_size=s.global_batch_size,
            seq_len=s.seq_len,
            precision=s.precision,
            optimizer=s.optimizer,
            gradient_checkpointing=s.gradient_checkpointing,
            fused_ce=s.fused_ce,
        ),
        distributed=DistributedSection(
            zero_stage=s.zero_stage,
            fsdp=s.fsdp,
            offload_optimizer=s.offload_optimizer,
            offload_params=s.offload_params,
        ),
    )


def write_recipe(plan: Plan, path: Path) -> Path:
    """Write the recipe; refuses to overwrite a file that is not a tuneboard recipe."""
    recipe = recipe_from_plan(plan)
    rec = plan.recommendation
    assert rec is not None
    cl = plan.cluster
    header = (
        f"# tuneboard launch {path}\n"
        f"# Planned by `tuneboard plan` for {plan.model.name} on {cl.nodes}x{cl.gpus_per_node}x"
        f"{cl.gpu.name}: {rec.setup.label()},\n"
        f"# {rec.memory.total_bytes / GIB:.1f} GiB per GPU of {rec.memory.usable_bytes / GIB:.1f} "
        f"usable, ~{rec.time.tokens_per_s:.0f} tokens/s estimated.\n"
        "# Before launching: set data.train to your dataset (.jsonl, .json, .parquet, .csv\n"
        "# or a saved HF datasets folder); the planner does not know it.\n"
    )
    if path.exists() and path.is_dir():
        raise PlannerInputError(
            f"--write {str(path)!r} is a folder; give a file name like recipe.yaml"
        )
    if (
        path.exists()
        and "# tuneboard launch" not in path.read_text(encoding="utf-8", errors="replace")[:200]
    ):
        raise PlannerInputError(
            f"--write {str(path)!r} exists and is not a recipe tuneboard wrote; not overwriting it"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_recipe(recipe, header), encoding="utf-8")
    except OSError as exc:
        raise PlannerInputError(f"--write {str(path)!r}: {exc.strerror}") from None
    return path
