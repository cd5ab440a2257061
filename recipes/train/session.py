"""Steps every training family takes in the same order: set up, then train and save.

A family script (sft.py, preference.py, ...) reads top to bottom:
    session = start(recipe, report, status)        # ranks, data, tokenizer (before the model)
    args = <Task>Config(**training_kwargs(...))    # before the model: ZeRO-3 needs it
    model = ...                                    # the family's own model set-up
    trainer = <Task>Trainer(..., callbacks=callbacks(session))
    train_and_save(trainer, session, peft=...)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.train.data_check import DataReport
from recipes.train.data_loading import load_datasets
from recipes.train.runtime import (
    RunContext,
    StatusFile,
    barrier,
    effective_precision,
    init_distributed,
    log,
    resume_checkpoint,
)

if TYPE_CHECKING:
    from recipes.schema import PrecisionKind, Recipe


#: Under output.dir: the PiSSA adapter before training (converts final/ to a plain LoRA).
PISSA_INIT = "pissa_init"


@dataclass
class Session:
    recipe: Recipe
    ctx: RunContext
    status: StatusFile
    precision: PrecisionKind
    train: Any
    eval: Any
    tokenizer: Any


def start(recipe: Recipe, report: DataReport, status: StatusFile) -> Session:
    """Process group, precision, datasets, tiny base model (if any), tokenizer."""
    ctx = RunContext.from_env(Path(recipe.output.dir))
    status.enabled = ctx.is_main
    _quiet_progress_bars()
    from recipes.train.modeling import check_machine_support, load_tokenizer

    check_machine_support(recipe, ctx)  # before the process group, the data and the weights
    # The process group comes first: ZeRO-3's zero.Init and the tiny-model barrier need it.
    init_distributed(recipe, ctx)
    precision = effective_precision(recipe, ctx)
    train, evaluation = load_datasets(recipe, report)
    log(
        ctx,
        f"{report.summary()}; {len(train)} train rows"
        + (f", {len(evaluation)} eval" if evaluation else ""),
    )
    if recipe.model.tiny is not None:
        # One process per node writes the tiny base (the output dir may not be shared).
        if ctx.is_local_main:
            from recipes.train.tiny_model import build_tiny_model, texts_of

            texts = list(texts_of(train))
            build_tiny_model(recipe.model.tiny, texts, ctx.output_dir / "tiny-base")
        barrier()
    needs_chat = report.format == "messages" or _conversational(train)
    tokenizer = load_tokenizer(recipe, ctx, needs_chat)
    return Session(recipe, ctx, status, precision, train, evaluation, tokenizer)


def _quiet_progress_bars() -> None:
    """Progress bars only on a terminal: in the launcher's log stream they are noise."""
    import sys

    if sys.stderr.isatty():
        return
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _conversational(dataset: Any) -> bool:
    first = dataset[0]
    return any(isinstance(first.get(k), list) for k in ("prompt", "chosen", "completion"))


def callbacks(session: Session) -> list[Any]:
    from recipes.train.metrics import MetricsCallback, NanGuard

    out: list[Any] = [MetricsCallback(session.ctx.output_dir, session.status)]
    if session.recipe.training.nan_policy == "stop":
        out.append(NanGuard())
    return out


def saves_here(trainer: Any, ctx: RunContext) -> bool:
    """Whether this process writes the run's files: the process that the Trainer has write
    final/ and the checkpoints (TrainingArguments.should_save). With save_on_each_node (nodes
    without a shared filesystem) that is each node's local rank 0, else global rank 0 only."""
    if getattr(trainer.args, "save_on_each_node", False):
        return ctx.is_local_main
    return ctx.is_main


def train_and_save(trainer: Any, session: Session, *, peft: bool) -> Path:
    """Train (resuming per training.resume), save the final weights or adapter, export."""
    recipe, ctx = session.recipe, session.ctx
    writer = saves_here(trainer, ctx)
    checkpoint = resume_checkpoint(recipe, ctx.output_dir)
    if checkpoint is not None:
        log(ctx, f"resuming from {checkpoint}")
    # PiSSA moves the adapter's principal components out of the base weights. Its adapter as
    # trained fits only that residual base (as do the checkpoints: a resumed run rebuilds the
    # same residual), so the initial adapter is kept to convert final/ below, by the process
    # that writes final/ (each node's own copy when every node keeps its own output).
    pissa_init = None
    if peft and recipe.method.lora.init == "pissa":
        from recipes.train.modeling import check_pissa_targets

        check_pissa_targets(trainer.model)  # same model on every rank: all refuse together
        pissa_init = ctx.output_dir / PISSA_INIT
        if writer:
            trainer.model.save_pretrained(str(pissa_init))
    session.status.update("training", resumed_from=checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)

    session.status.update("saving")
    final = ctx.output_dir / "final"
    trainer.save_model(str(final))  # adapter only for PEFT; gathered 16-bit weights under ZeRO-3
    if writer:  # the process that just wrote final/ (trainer.args.should_save)
        if pissa_init is not None:
            # final/ as an ordinary LoRA of rank 2r on the original base (the trained adapter
            # minus the initial one), so loading and merging work as for any adapter.
            from recipes.train.modeling import convert_pissa_adapter

            convert_pissa_adapter(final, pissa_init)
            log(ctx, "pissa: final adapter converted to a rank-2r LoRA on the original base")
        session.tokenizer.save_pretrained(final)
    barrier()  # no rank reads final/ before every node's writer has finished it
    if peft and recipe.output.export_merged and ctx.is_main:
        from recipes.train.modeling import export_merged

        merged = export_merged(recipe, ctx, final, ctx.output_dir / "merged")
        log(ctx, f"merged weights written to {merged}")
    barrier()
    session.status.update("done", final_dir=str(final))
    log(ctx, f"done: {final}")
    return final
