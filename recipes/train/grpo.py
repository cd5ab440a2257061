"""Online RL with group-relative rewards (task.kind grpo), with TRL's GRPOTrainer.

    python -m recipes.run recipes/configs/tiny-grpo-lora.yaml

Reads top to bottom. For each prompt the policy samples task.grpo.num_generations
completions (with transformers' generate; vLLM is not wired in), scores them with the
reward functions of task.grpo.rewards (recipes/train/reward_functions.py), and is pushed towards the
completions that beat their group's mean. Data: a prompt column; other columns (e.g. an
answer) reach the reward functions as keyword arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recipes.train.data_check import DataReport
from recipes.train.runtime import StatusFile
from recipes.train.session import callbacks, start, train_and_save
from recipes.train.trainer_args import training_kwargs

if TYPE_CHECKING:
    from recipes.schema import Recipe


def main(recipe: Recipe, report: DataReport, status: StatusFile) -> None:
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    from recipes.train.modeling import apply_freeze, load_model, lora_config
    from recipes.train.reward_functions import resolve

    grpo = recipe.task.grpo
    assert grpo is not None  # the schema requires it for kind grpo
    # Reward functions first: a typo in a module:function fails before any loading.
    reward_funcs: list[Any] = [resolve(spec) for spec in grpo.rewards]

    # 1. Ranks, precision, data and tokenizer, before the weights.
    session = start(recipe, report, status)
    ctx = session.ctx

    # 2. Arguments before the model (ZeRO-3 registers its config here). The prompt keeps
    #    seq_len - max_completion_length tokens. GRPO counts its own tokens (prompt + sampled
    #    completion, all ranks) into the Trainer's state; the Trainer's generic counter finds
    #    no input_ids in a batch of prompts and would warn at every step, so it is off.
    kwargs = training_kwargs(recipe, ctx, session.precision, has_eval=session.eval is not None)
    kwargs["include_num_input_tokens_seen"] = "no"
    args = GRPOConfig(
        **kwargs,
        num_generations=grpo.num_generations,
        max_completion_length=grpo.max_completion_length,
        temperature=grpo.temperature,
        reward_weights=grpo.reward_weights,
        beta=recipe.task.beta if recipe.task.beta is not None else 0.0,
    )

    # 3. Policy model and method.
    model = load_model(recipe, ctx, session.precision)
    model.config.use_cache = True  # GRPO generates: the KV cache pays off here
    peft_config = lora_config(recipe)
    if recipe.method.kind == "freeze":
        apply_freeze(recipe, model, ctx)

    # 4. Trainer with metrics/status and the NaN guard; 5. train, save, export.
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=session.train,
        eval_dataset=session.eval,
        processing_class=session.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks(session),
    )
    train_and_save(trainer, session, peft=peft_config is not None)
