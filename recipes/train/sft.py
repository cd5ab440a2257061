"""SFT and continued pre-training (task.kind sft | pretrain) with TRL's SFTTrainer.

    python -m recipes.run recipes/configs/tiny-sft-lora.yaml

Reads top to bottom. Data formats: text (pretrain, or SFT on plain text), messages (chat
template applied by TRL; assistant_only_loss optional), prompt/completion (loss on the
completion only unless task.completion_only_loss is false). Methods: full, freeze, LoRA,
DoRA (PEFT), QLoRA (bitsandbytes 4/8-bit + PEFT). Distribution: DDP, DeepSpeed ZeRO-1/2/3
(generated config, optional CPU/NVMe offload) or FSDP2, all through the Trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recipes.train.data_check import DataReport
from recipes.train.runtime import StatusFile, log
from recipes.train.session import callbacks, start, train_and_save
from recipes.train.trainer_args import training_kwargs

if TYPE_CHECKING:
    from recipes.schema import Recipe


def main(recipe: Recipe, report: DataReport, status: StatusFile) -> None:
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    from recipes.train.modeling import apply_freeze, count_parameters, load_model, lora_config

    # 1. Ranks, precision, data and tokenizer: everything that can fail cheaply comes
    #    before the weights are read.
    session = start(recipe, report, status)
    ctx, task = session.ctx, recipe.task

    # 2. Training arguments BEFORE the model: with ZeRO-3, TrainingArguments registers the
    #    DeepSpeed config that makes from_pretrained partition weights as they load.
    args = SFTConfig(
        **training_kwargs(recipe, ctx, session.precision, has_eval=session.eval is not None),
        max_length=recipe.training.seq_len,
        packing=recipe.data.packing,
        dataset_text_field="text",
        completion_only_loss=task.completion_only_loss,
        assistant_only_loss=task.assistant_only_loss,
        dataset_num_proc=recipe.data.num_proc,
        # pretrain: plain text, every token is a target; the tokenizer's EOS closes a document.
    )

    # 3. The model and the method. LoRA/DoRA/QLoRA adapters are added by SFTTrainer from the
    #    PEFT config (it also handles the ZeRO-3 and checkpointing details); freeze marks
    #    the trainable layers here; full trains everything.
    model = load_model(recipe, ctx, session.precision)
    peft_config = lora_config(recipe)
    if recipe.method.kind == "freeze":
        apply_freeze(recipe, model, ctx)

    # 4. The trainer, with the metrics/status writer and the NaN guard.
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=session.train,
        eval_dataset=session.eval,
        processing_class=session.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks(session),
    )
    trainable, total = count_parameters(trainer.model)
    log(ctx, f"{recipe.method.kind}: {trainable:,} of {total:,} parameters train")

    # 5. Train (resuming per training.resume), save the weights or the adapter, export.
    train_and_save(trainer, session, peft=peft_config is not None)
