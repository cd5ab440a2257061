"""Preference optimisation (task.kind dpo | kto | orpo | simpo) with TRL's trainers.

    python -m recipes.run recipes/configs/tiny-dpo-lora.yaml

Reads top to bottom, like sft.py. Data: prompt/chosen/rejected (kto also takes
prompt/completion/label, or unpairs chosen/rejected into it). The reference model of DPO and
KTO is the base itself for LoRA-family methods (the adapter is switched off to score it) and a
frozen copy for full/freeze. ORPO and SimPO need no reference. SimPO is TRL's CPO trainer with
loss_type simpo and cpo_alpha 0 (the SimPO paper's objective); both live in trl.experimental.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recipes.train.data_check import DataReport
from recipes.train.runtime import StatusFile, log
from recipes.train.session import callbacks, start, train_and_save
from recipes.train.trainer_args import training_kwargs

if TYPE_CHECKING:
    from recipes.schema import Recipe


def _config_and_trainer(recipe: Recipe) -> tuple[Any, Any, dict[str, Any]]:
    """(Config class, Trainer class, task-specific config fields) for the task."""
    task = recipe.task
    seq = recipe.training.seq_len
    if task.kind == "dpo":
        from trl.trainer.dpo_config import DPOConfig
        from trl.trainer.dpo_trainer import DPOTrainer

        return DPOConfig, DPOTrainer, {"beta": task.beta or 0.1, "max_length": seq}
    if task.kind == "kto":
        from trl.trainer.kto_config import KTOConfig
        from trl.trainer.kto_trainer import KTOTrainer

        return KTOConfig, KTOTrainer, {"beta": task.beta or 0.1, "max_length": seq}
    if task.kind == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        orpo = {"beta": task.beta or 0.1, "max_length": seq}
        return ORPOConfig, _counting_pair_tokens(ORPOTrainer), orpo
    if task.kind == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        fields = {
            "loss_type": "simpo",
            "cpo_alpha": 0.0,
            "beta": task.beta or 2.0,
            "simpo_gamma": task.simpo_gamma if task.simpo_gamma is not None else 0.5,
            "max_length": seq,
        }
        return CPOConfig, _counting_pair_tokens(CPOTrainer), fields
    raise ValueError(f"recipes.train.preference does not train task {task.kind!r}")


def _counting_pair_tokens(trainer_cls: Any) -> Any:
    """trainer_cls, counting the tokens of TRL's ORPO/CPO batches into tokens_seen.

    The Trainer counts `input_ids` (non-padding: `attention_mask`), which these batches do
    not have: they carry `chosen_*` and `rejected_*` sequences, each prompt + answer. Counting
    both masks is what the Trainer counts for DPO, whose `input_ids` stack the same two
    sequences. Over all ranks, like the Trainer's own count.
    """
    if not callable(getattr(trainer_cls, "_track_num_input_tokens", None)):
        raise RuntimeError(
            f"{trainer_cls.__name__} has no _track_num_input_tokens: this transformers version "
            "counts tokens elsewhere; recipes.train.preference needs updating"
        )

    class PairTokenCounting(trainer_cls):  # type: ignore[misc]
        def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
            import torch

            if self.args.include_num_input_tokens_seen == "no":
                return
            keys = ("chosen_attention_mask", "rejected_attention_mask")
            if self.args.include_num_input_tokens_seen != "non_padding":
                keys = ("chosen_input_ids", "rejected_input_ids")
            count = sum(
                int(inputs[k].sum() if k.endswith("mask") else inputs[k].numel()) for k in keys
            )
            tokens = torch.tensor(count, device=self.args.device, dtype=torch.int64)
            self.state.num_input_tokens_seen += int(self.accelerator.gather(tokens).sum().item())

    PairTokenCounting.__name__ = PairTokenCounting.__qualname__ = trainer_cls.__name__
    return PairTokenCounting


def main(recipe: Recipe, report: DataReport, status: StatusFile) -> None:
    from recipes.train.modeling import apply_freeze, load_model, lora_config

    # 1. Ranks, precision, data and tokenizer, before the weights.
    session = start(recipe, report, status)
    ctx = session.ctx
    train, evaluation = session.train, session.eval
    if recipe.task.kind == "kto" and report.format == "prompt/chosen/rejected":
        # KTO learns from single completions marked good or bad: split each pair in two.
        from trl.data_utils import maybe_unpair_preference_dataset

        train = maybe_unpair_preference_dataset(train)
        evaluation = maybe_unpair_preference_dataset(evaluation) if evaluation else None

    # 2. Arguments before the model (ZeRO-3 registers its config here).
    config_cls, trainer_cls, task_fields = _config_and_trainer(recipe)
    args = config_cls(
        **training_kwargs(recipe, ctx, session.precision, has_eval=evaluation is not None),
        **task_fields,
        dataset_num_proc=recipe.data.num_proc,
    )

    # 3. Policy model and method; the reference model (dpo/kto) is made by TRL: for PEFT
    #    the same weights with the adapter disabled, for full/freeze a frozen copy.
    model = load_model(recipe, ctx, session.precision)
    peft_config = lora_config(recipe)
    if recipe.method.kind == "freeze":
        apply_freeze(recipe, model, ctx)

    # 4. The trainer, with the metrics/status writer and the NaN guard.
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=session.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks(session),
    )
    log(ctx, f"{recipe.task.kind} with {recipe.method.kind}: {len(train)} examples")

    # 5. Train, save, export.
    train_and_save(trainer, session, peft=peft_config is not None)
