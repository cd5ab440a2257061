"""The other families on CPU with the tiny model: pretrain, DPO, KTO, ORPO, SimPO, reward, GRPO.

Each shipped tiny config runs as `python -m recipes.run` on the toy data; the loss must go
down (GRPO: the run completes and logs its rewards — a random tiny policy learns little in
a few steps, so no learning claim is made for it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes import tinydata
from tests.integration.recipe_runs import assert_learned, run_recipe

pytestmark = pytest.mark.integration
pytest.importorskip("trl")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("families")
    tinydata.write(root / "data" / "tiny")
    return root


@pytest.mark.parametrize(
    ("config", "steps", "factor"),
    [
        ("tiny-pretrain-full.yaml", 20, 0.9),
        ("tiny-dpo-lora.yaml", 20, 0.9),  # starts at ln 2 = 0.693
        ("tiny-kto-lora.yaml", 30, 0.95),  # starts at 0.5; noisier (unpaired, KL estimate)
        ("tiny-orpo-lora.yaml", 20, 0.9),
        ("tiny-simpo-lora.yaml", 20, 0.9),
        ("tiny-reward-lora.yaml", 30, 0.9),  # Bradley-Terry, starts at ln 2
    ],
)
def test_family_learns(workdir: Path, config: str, steps: int, factor: float) -> None:
    run = run_recipe(config, workdir, config.removesuffix(".yaml"), f"training.max_steps={steps}")
    print(f"{config}: {run.seconds:.1f} s, losses {[round(x, 3) for x in run.losses()]}")
    # TRL's ORPO/CPO batches carry no input_ids, so the Trainer cannot count their tokens
    assert_learned(run, factor, tokens=not ("orpo" in config or "simpo" in config))
    final = run.out_dir / "final"
    if "lora" in config:
        adapter = json.loads((final / "adapter_config.json").read_text())
        assert adapter["task_type"] == ("SEQ_CLS" if "reward" in config else "CAUSAL_LM")
    else:
        assert (final / "model.safetensors").is_file()
    if "dpo" in config or "simpo" in config:
        extra = run.metrics[-1]["extra"]
        assert extra["rewards/accuracies"] > 0.5, extra  # chosen scored above rejected


def test_grpo_runs_end_to_end(workdir: Path) -> None:
    run = run_recipe(
        "tiny-grpo-lora.yaml", workdir, "grpo", "training.max_steps=4", "training.logging_steps=2"
    )
    assert run.returncode == 0, run.explain()
    assert run.status["phase"] == "done"
    extra = run.metrics[-1]["extra"]
    assert {"rewards/length_24/mean", "rewards/regex/mean", "reward"} <= set(extra), extra
    assert 0.0 <= extra["reward"] <= 2.0
    assert (run.out_dir / "final" / "adapter_config.json").is_file()
