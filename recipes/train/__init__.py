"""The training programs that run on the nodes (torch, transformers, peft, trl,
deepspeed, accelerate): one top-down module per task family (sft, preference, grpo,
reward_model) over shared steps (session, modeling, data_loading, runtime, metrics,
trainer_args, distributed_config). Entered through `python -m recipes.run`."""
