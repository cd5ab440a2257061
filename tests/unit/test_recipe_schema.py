"""Recipe format: every shipped recipe validates, errors name the key, aliases, DeepSpeed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from recipes.schema import (
    Recipe,
    RecipeError,
    apply_overrides,
    dump_recipe,
    load_recipe,
    parse_recipe,
    read_recipe_mapping,
)
from recipes.schema.aliases import ALIASES, alias_table_markdown
from recipes.train.distributed_config import BUCKET_ELEMENTS, deepspeed_config, fsdp_config
from tests.conftest import ROOT

RECIPE_FILES = sorted((ROOT / "recipes").rglob("*.yaml"))


def _err(data: dict[str, Any]) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(data)
    return str(info.value)


def test_there_are_recipes_to_check() -> None:
    names = {p.name for p in RECIPE_FILES}
    assert len(RECIPE_FILES) >= 15
    assert {"qwen2.5-7b-lora-sft.yaml", "llama-30b-full-zero3-3x8xa800.yaml"} <= names


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_under_recipes_validates_and_opens_with_its_command(path: Path) -> None:
    recipe = load_recipe(path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and ("recipes.run" in first or "tuneboard launch" in first)
    assert str(path.relative_to(ROOT)) in first
    # the canonical dump of a recipe reads back to the same recipe
    assert parse_recipe(read_recipe_mapping_from_text(dump_recipe(recipe))) == recipe


def read_recipe_mapping_from_text(text: str) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def test_realistic_recipes_say_what_the_issue_asks() -> None:
    cfg = ROOT / "recipes" / "configs"
    big = load_recipe(cfg / "llama-30b-full-zero3-3x8xa800.yaml")
    assert big.method.kind == "full" and big.distributed.zero_stage == 3
    assert big.cluster is not None and big.cluster.world_size == 24
    assert big.training.accumulation_for(big.cluster.world_size) == 1
    qlora = load_recipe(cfg / "llama-3.1-70b-qlora.yaml")
    assert (qlora.method.kind, qlora.method.quantization_bits) == ("qlora", 4)
    assert qlora.method.quantization_type == "nf4" and qlora.method.double_quantization
    assert load_recipe(cfg / "qwen2.5-7b-dpo-lora.yaml").task.kind == "dpo"
    grpo = load_recipe(cfg / "qwen2.5-1.5b-grpo.yaml")
    assert grpo.task.grpo is not None and "format" in grpo.task.grpo.rewards


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ({"model": "m", "lora_rnak": 8}, ["lora_rnak", "unknown key", "'lora_rank'"]),
        (
            {"model": "m", "training": {"learnig_rate": 1e-4}},
            ["training.learnig_rate", "'learning_rate'"],
        ),
        ({"model": "m", "method": {"rank": 8}}, ["method.rank", "method.lora.rank"]),
        ({"model": "m", "dataset": "alpaca"}, ["dataset", "data.train"]),
        (
            {"model": "m", "cluster": {"nodes": [{"address": "h", "prot": 2}]}},
            ["cluster.nodes[0].prot", "'port'"],
        ),
    ],
)
def test_unknown_keys_are_named_with_a_suggestion(data: dict[str, Any], needles: list[str]) -> None:
    message = _err(data)
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (
            {"model": "m", "method": {"kind": "qlroa"}},
            ["method.kind", "'qlroa'", "did you mean 'qlora'"],
        ),
        (
            {"model": "m", "training": {"learning_rate": -1}},
            ["training.learning_rate", "greater than 0"],
        ),
        (
            {"model": "m", "learning_rate": "fast"},
            ["training.learning_rate", "written as 'learning_rate'"],
        ),
        ({"model": "m", "cluster": {"nodes": ["h:70000"]}}, ["cluster.nodes[0].port", "65535"]),
        (
            {"model": "m", "cluster": {"nodes": ["h"], "env": {"1BAD": "x"}}},
            ["cluster.env", "1BAD"],
        ),
        ({"model": "m", "data": {"chat_template": "qwen"}}, ["data.chat_template", "'qwen'"]),
        ({"model": "m", "data": {"eval_split": 1.5}}, ["data.eval_split", "between 0 and 1"]),
        ({"model": "m", "task": {"kind": "grpo"}}, ["task", "grpo.rewards"]),
        ({"model": "m", "task": {"kind": "grpo", "grpo": {"rewards": ["regex:("]}}}, ["regex:("]),
        (
            {"model": "m", "task": "dpo", "data": {"format": "text"}},
            ["task.kind 'dpo'", "data.format"],
        ),
        ({"model": "m", "training": {"epochs": 1, "max_steps": 5}}, ["epochs", "max_steps"]),
        (
            {"model": "m", "distributed": {"zero_stage": 3, "fsdp": "full"}},
            ["zero_stage 3", "fsdp"],
        ),
        (
            {"model": "m", "distributed": {"offload_params": "cpu"}},
            ["offload_params", "zero_stage 3"],
        ),
        (
            {"model": "m", "distributed": {"zero_stage": 3, "offload_optimizer": "nvme"}},
            ["nvme_path"],
        ),
        ({"model": "m", "method": "full", "output": {"export_merged": True}}, ["export_merged"]),
        (
            {"model": {"name": "t", "tiny": {"config": {"hidden_size": 8}}}},
            ["model.tiny.config", "model_type"],
        ),
        (
            {"model": "m", "training": {"global_batch_size": 10, "micro_batch_size": 4}},
            ["global_batch_size 10"],
        ),
        (
            {
                "model": "m",
                "training": {"global_batch_size": 64, "micro_batch_size": 4},
                "cluster": {"nodes": ["a", "b", "c"], "gpus_per_node": 8},
            },
            ["global_batch_size 64", "24 GPUs"],
        ),
        ({"model": "m", "cluster": {"nodes": ["a", "a"]}}, ["nodes[1]", "nodes[0]"]),
        ({"method": "lora"}, ["model", "missing"]),
        (
            {
                "model": "m",
                "method": {"lora": {"init": "pissa", "target_modules": ["q_proj", "embed_tokens"]}},
            },
            ["method", "lora.init 'pissa'", "['embed_tokens']", "modules_to_save"],
        ),
        (  # a dotted target is matched by its last name, as PEFT matches a suffix
            {"model": "m", "lora_target": "q_proj,transformer.wte", "pissa_init": True},
            ["['transformer.wte']", "target_modules"],
        ),
    ],
)
def test_bad_values_name_the_key(data: dict[str, Any], needles: list[str]) -> None:
    message = _err(data)
    for needle in needles:
        assert needle in message, message


def test_pissa_takes_embeddings_only_as_modules_to_save() -> None:
    # Trained in full beside the adapter: nothing to convert, so allowed.
    lora = {"init": "pissa", "target_modules": ["q_proj"], "modules_to_save": ["embed_tokens"]}
    recipe = parse_recipe({"model": "m", "method": {"lora": lora}})
    assert recipe.method.lora.modules_to_save == ["embed_tokens"]
    # Other inits adapt embeddings as PEFT does; PiSSA on linear layers only is fine.
    parse_recipe({"model": "m", "method": {"lora": {"target_modules": ["embed_tokens"]}}})
    parse_recipe({"model": "m", "method": {"lora": {"init": "pissa"}}})  # all-linear


def test_llamafactory_flat_keys_mean_the_same_as_sections() -> None:
    flat = parse_recipe(
        {
            "model_name_or_path": "Qwen/Qwen2.5-7B",
            "stage": "sft",
            "finetuning_type": "lora",
            "lora_rank": 8,
            "lora_alpha": 16,
            "lora_target": "q_proj,v_proj",
            "cutoff_len": 1024,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 4,
            "learning_rate": 1e-4,
            "num_train_epochs": 2.0,
            "lr_scheduler_type": "linear",
            "bf16": True,
            "output_dir": "out",
            "val_size": 0.1,
            "deepspeed": "ds_z3.json",
            "do_train": True,
        }
    )
    sectioned = parse_recipe(
        {
            "model": {"name": "Qwen/Qwen2.5-7B"},
            "task": {"kind": "sft"},
            "method": {
                "kind": "lora",
                "lora": {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
            },
            "data": {"eval_split": 0.1},
            "training": {
                "seq_len": 1024,
                "micro_batch_size": 2,
                "gradient_accumulation_steps": 4,
                "learning_rate": 1e-4,
                "epochs": 2.0,
                "lr_scheduler": "linear",
                "precision": "bf16-mixed",
            },
            "distributed": {"deepspeed_config": "ds_z3.json"},
            "output": {"dir": "out"},
        }
    )
    assert flat == sectioned


def test_axolotl_keys_and_refinements() -> None:
    recipe = parse_recipe(
        {
            "base_model": "m",
            "adapter": "lora",
            "load_in_4bit": True,
            "lora_r": 32,
            "lora_target_linear": True,
            "sequence_len": 4096,
            "micro_batch_size": 1,
            "num_epochs": 1,
            "sample_packing": False,
            "optimizer": "paged_adamw_8bit",
            "rl": "dpo",
        }
    )
    assert recipe.method.kind == "qlora" and recipe.method.quantization_bits == 4
    assert recipe.method.lora.rank == 32 and recipe.method.lora.target_modules == "all-linear"
    assert recipe.training.optimizer == "paged-adamw-8bit" and recipe.training.seq_len == 4096
    assert recipe.task.kind == "dpo" and recipe.data.packing is False
    sft = parse_recipe({"base_model": "m", "train_on_inputs": False, "sample_packing": True})
    assert sft.task.completion_only_loss is True and sft.data.packing is True
    # LLaMA-Factory: lora + quantization_bit -> QLoRA; lora + use_dora -> DoRA
    assert (
        parse_recipe({"model": "m", "finetuning_type": "lora", "use_dora": True}).method.kind
        == "dora"
    )
    # inside a section, PEFT's own names
    lora = parse_recipe(
        {"model": "m", "method": {"lora": {"r": 4, "lora_target": "all"}}}
    ).method.lora
    assert (lora.rank, lora.target_modules) == (4, "all-linear")


def test_aliases_that_disagree_are_refused() -> None:
    message = _err({"model": "m", "cutoff_len": 512, "training": {"seq_len": 1024}})
    assert "cutoff_len" in message and "512" in message and "1024" in message
    message = _err({"model": "m", "finetuning_type": "full", "quantization_bit": 4})
    assert "finetuning_type" in message and "quantization_bit" in message
    assert "ppo" in _err({"model": "m", "stage": "ppo"})


def test_alias_table_in_readme_is_current() -> None:
    readme = (ROOT / "recipes" / "README.md").read_text(encoding="utf-8")
    assert alias_table_markdown() in readme, (
        "regenerate the table: recipes.schema.aliases.alias_table_markdown()"
    )
    assert len(ALIASES) > 60


def test_shorthands_and_defaults() -> None:
    recipe = parse_recipe({"model": "m", "method": "dora", "task": "pretrain"})
    assert (recipe.model.name, recipe.method.kind, recipe.task.kind) == ("m", "dora", "pretrain")
    assert recipe.distributed.zero_stage == 0 and not recipe.distributed.uses_deepspeed
    assert recipe.training.default_learning_rate("dora") == 2e-4
    assert recipe.training.default_learning_rate("full") == 1e-5
    fsdp = parse_recipe({"model": "m", "distributed": {"fsdp": "full"}}).distributed
    assert fsdp.zero_stage is None  # fsdp alone means "not ZeRO"
    node = parse_recipe({"model": "m", "cluster": {"nodes": ["ubuntu@10.0.0.5:2222"]}}).cluster
    assert node is not None and node.nodes[0].model_dump(exclude_none=True) == {
        "address": "10.0.0.5",
        "port": 2222,
        "user": "ubuntu",
    }


def test_overrides_and_load(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("# python -m recipes.run r.yaml\nmodel: m\ntraining:\n  max_steps: 5\n")
    recipe = load_recipe(
        path, ["training.max_steps=7", "method.kind=qlora", "data.train=[a.jsonl, b.jsonl]"]
    )
    assert recipe.training.max_steps == 7 and recipe.method.kind == "qlora"
    assert recipe.data.train_paths() == ["a.jsonl", "b.jsonl"] and recipe.name == "r"
    assert apply_overrides({"a": {"b": 1}}, ["a.c=x"]) == {"a": {"b": 1, "c": "x"}}
    with pytest.raises(RecipeError, match=r"section\.key=value"):
        load_recipe(path, ["oops"])
    with pytest.raises(RecipeError, match="no such file"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(RecipeError, match="mapping"):
        read_recipe_mapping(tmp_path / "list.yaml")


def _ds(**distributed: Any) -> Recipe:
    return parse_recipe(
        {
            "model": "m",
            "training": {"micro_batch_size": 4, "global_batch_size": 64, "max_grad_norm": 0.5},
            "distributed": distributed,
        }
    )


def test_deepspeed_config_zero2() -> None:
    config = deepspeed_config(_ds(zero_stage=2))
    zero = config["zero_optimization"]
    assert zero["stage"] == 2 and zero["overlap_comm"] is True
    assert zero["reduce_bucket_size"] == zero["allgather_bucket_size"] == BUCKET_ELEMENTS == 2e8
    assert config["train_micro_batch_size_per_gpu"] == 4 and config["gradient_clipping"] == 0.5
    assert config["gradient_accumulation_steps"] == "auto" and config["train_batch_size"] == "auto"
    assert config["bf16"] == {"enabled": True} and config["fp16"]["enabled"] is False
    assert "offload_optimizer" not in zero and "optimizer" not in config
    sized = deepspeed_config(_ds(zero_stage=2), world_size=8)
    assert sized["gradient_accumulation_steps"] == 2 and sized["train_batch_size"] == 64


def test_deepspeed_config_zero3_offload_and_precision() -> None:
    config = deepspeed_config(
        _ds(zero_stage=3, offload_optimizer="cpu", offload_params="nvme", nvme_path="/nvme"),
        precision="fp16-mixed",
    )
    zero = config["zero_optimization"]
    for key in (
        "reduce_bucket_size",
        "stage3_prefetch_bucket_size",
        "stage3_param_persistence_threshold",
    ):
        assert zero[key] == "auto"
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_param"] == {"device": "nvme", "pin_memory": True, "nvme_path": "/nvme"}
    assert config["optimizer"]["type"] == "AdamW"  # ZeRO-Offload needs DeepSpeed's CPU Adam
    assert config["fp16"]["enabled"] is True and config["fp16"]["loss_scale"] == 0
    assert config["bf16"]["enabled"] is False
    with pytest.raises(ValueError, match="zero_stage 1, 2 or 3"):
        deepspeed_config(_ds(zero_stage=0))
    with pytest.raises(ValueError, match="not a multiple"):
        deepspeed_config(_ds(zero_stage=1), world_size=3)


def test_fsdp_config() -> None:
    recipe = parse_recipe({"model": "m", "distributed": {"fsdp": "full", "offload_params": "cpu"}})
    config = fsdp_config(recipe, gradient_checkpointing=True)
    assert config["version"] == 2 and config["reshard_after_forward"] is True
    assert config["cpu_offload"] is True and config["activation_checkpointing"] is True
    grad_op = parse_recipe({"model": "m", "distributed": {"fsdp": "grad-op"}})
    assert fsdp_config(grad_op, gradient_checkpointing=False)["reshard_after_forward"] is False


def test_light_modules_do_not_import_the_training_stack() -> None:
    code = (
        "import recipes.schema, recipes.train.data_check, recipes.train.distributed_config, "
        "recipes.run, recipes.train.toy_data, recipes.train.reward_functions, "
        "recipes.schema.aliases\n"
        "import sys; print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    leaked = [
        m
        for m in ("torch", "transformers", "textual", "peft", "trl", "deepspeed", "datasets")
        if m in out
    ]
    assert leaked == []


def test_every_recipe_optimizer_is_one_transformers_runs_and_the_planner_plans() -> None:
    from typing import get_args

    from planner.setups import OPTIMIZERS
    from recipes.schema import OptimizerKind
    from recipes.train.trainer_args import OPTIM

    kinds = set(get_args(OptimizerKind))
    assert set(OPTIM) == kinds and kinds <= set(OPTIMIZERS)
    # the default is torch's fused AdamW (no foreach temporaries at the step)
    assert Recipe.model_validate({"model": {"name": "x"}}).training.optimizer == "adamw"
    assert OPTIM["adamw"] == "adamw_torch_fused" and OPTIM["adamw-foreach"] == "adamw_torch"
