"""Reward-model training (task.kind reward) with TRL's RewardTrainer.

    python -m recipes.run recipes/configs/tiny-reward.yaml

Reads top to bottom. The model is the base with a one-output score head
(AutoModelForSequenceClassification; the head is new and always trains, also under LoRA,
where PEFT's SEQ_CLS task keeps it in modules_to_save). Data: prompt/chosen/rejected; the
loss is -log sigmoid(r_chosen - r_rejected) (Bradley-Terry), ln 2 = 0.693 at the start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recipes.train.data_check import DataReport
from recipes.train.runtime import StatusFile
from recipes.train.session import callbacks, start, train_and_save
from recipes.train.trainer_args import training_kwargs

if TYPE_CHECKING:
    from recipes.schema import Recipe


def main(recipe: Recipe, report: DataReport, status: StatusFile) -> None:
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_config import RewardConfig
    from trl.trainer.reward_trainer import RewardTrainer

    from recipes.train.modeling import apply_freeze, load_model, lora_config

    # 1. Ranks, precision, data and tokenizer, before the weights.
    session = start(recipe, report, status)
    ctx = session.ctx

    # 2. Arguments before the model (ZeRO-3 registers its config here).
    args = RewardConfig(
        **training_kwargs(recipe, ctx, session.precision, has_eval=session.eval is not None),
        max_length=recipe.training.seq_len,
        dataset_num_proc=recipe.data.num_proc,
    )

    # 3. The scoring model: base + a new 1-output head; its pad token must be known to
    #    find each sequence's last token.
    model = load_model(
        recipe, ctx, session.precision, AutoModelForSequenceClassification, num_labels=1
    )
    model.config.pad_token_id = session.tokenizer.pad_token_id
    peft_config = lora_config(recipe, task_type="SEQ_CLS")
    if recipe.method.kind == "freeze":
        apply_freeze(recipe, model, ctx)
        for param in model.score.parameters():
            param.requires_grad_(True)  # the head is new: it must train

    # 4. Trainer with metrics/status and the NaN guard; 5. train, save, export.
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=session.train,
        eval_dataset=session.eval,
        processing_class=session.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks(session),
    )
    train_and_save(trainer, session, peft=peft_config is not None)
