"""Method options on CPU with the tiny model: 8-bit QLoRA, PiSSA init, and LoftQ's refusal.

8-bit: bitsandbytes LLM.int8 layers (Linear8bitLt, int8 weights) train a LoRA on CPU.
PiSSA: the adapter starts as the top-r singular part of each weight and the base keeps the
residual; final/ is converted to a plain rank-2r LoRA on the original base (checked from the
files). LoftQ cannot run without CUDA (PEFT computes it on cuda only): refused up front.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes import tinydata
from recipes.schema import RecipeError, parse_recipe
from tests.integration.recipe_runs import assert_learned, check_pissa_conversion, run_recipe

pytestmark = pytest.mark.integration
pytest.importorskip("trl")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("methods")
    tinydata.write(root / "data" / "tiny")
    return root


def test_qlora_8bit_learns(workdir: Path) -> None:
    pytest.importorskip("bitsandbytes")
    run = run_recipe(
        "tiny-sft-qlora.yaml",
        workdir,
        "qlora8",
        "method.quantization_bits=8",
        "training.max_steps=20",
    )
    print(f"qlora 8-bit: {run.seconds:.1f} s, losses {[round(x, 3) for x in run.losses()]}")
    assert_learned(run)
    assert "qlora: base loaded in 8-bit, 14 Linear8bitLt layers, weights stored as int8" in (
        run.output
    )
    adapter = json.loads((run.out_dir / "final" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["init_lora_weights"] is True


def test_pissa_init_trains_and_saves_a_plain_lora(workdir: Path) -> None:
    run = run_recipe(
        "tiny-sft-lora.yaml",
        workdir,
        "pissa",
        "method.lora.init=pissa",
        "training.max_steps=20",
        "output.export_merged=true",
    )
    print(f"pissa: {run.seconds:.1f} s, losses {[round(x, 3) for x in run.losses()]}")
    assert_learned(run)
    assert "pissa: final adapter converted to a rank-2r LoRA" in run.output
    initial = json.loads((run.out_dir / "pissa_init" / "adapter_config.json").read_text())
    assert initial["r"] == 8
    check_pissa_conversion(
        run.out_dir,
        "checkpoint-20",
        ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"),
    )


def test_loftq_is_refused_without_cuda(workdir: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("LoftQ runs where there is CUDA")
    run = run_recipe("tiny-sft-lora.yaml", workdir, "loftq", "method.lora.init=loftq")
    assert run.returncode == 1, run.explain()
    assert run.status["phase"] == "failed", run.explain()
    assert "method.lora.init loftq needs a CUDA GPU" in run.status["error"]
    assert not (run.out_dir / "tiny-base").exists()  # refused before the data and the weights
    assert not run.metrics


def test_pissa_is_refused_where_its_conversion_cannot_hold() -> None:
    for kind in ("dora", "qlora"):
        with pytest.raises(RecipeError, match="pissa"):
            parse_recipe({"model": "m", "method": {"kind": kind, "lora": {"init": "pissa"}}})
