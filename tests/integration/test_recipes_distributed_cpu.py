"""Two processes on one CPU (torchrun, gloo): DDP, DeepSpeed ZeRO-2 with resume, ZeRO-3 offload.

The first ZeRO-Offload run compiles DeepSpeed's CPU Adam (~30 s on an idle 2-core machine,
longer when busy), kept under TORCH_EXTENSIONS_DIR (scripts/test.sh: .cache/torch_extensions).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes import tinydata
from tests.integration.recipe_runs import assert_learned, run_recipe

pytestmark = pytest.mark.integration
pytest.importorskip("trl")
pytest.importorskip("deepspeed")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    tinydata.write(root / "data" / "tiny")
    return root


def test_ddp_two_processes_lora(workdir: Path) -> None:
    run = run_recipe("tiny-sft-lora.yaml", workdir, "ddp", "training.max_steps=20", nproc=2)
    assert_learned(run)
    assert not (run.out_dir / "deepspeed.json").exists()  # zero_stage 0 is plain DDP
    assert run.metrics[-1]["epoch"] == pytest.approx(20 * 16 / 256)  # 2 ranks x 8 per step


def test_zero2_two_processes_resume_after_a_stop(workdir: Path) -> None:
    common = ("method.kind=full", "distributed.zero_stage=2", "training.save_steps=5")
    first = run_recipe(
        "tiny-sft-lora.yaml", workdir, "zero2", "training.max_steps=5", *common, nproc=2
    )
    assert first.returncode == 0, first.explain()
    assert (first.out_dir / "checkpoint-5" / "global_step5").is_dir()  # DeepSpeed's own shards
    second = run_recipe(
        "tiny-sft-lora.yaml", workdir, "zero2", "training.max_steps=15", *common, nproc=2
    )
    assert_learned(second)
    assert second.status["resumed_from"].endswith("checkpoint-5")
    train_steps = [m["step"] for m in second.metrics if m["event"] == "train"]
    assert train_steps == [1, 5, 10, 15]  # the resumed run logs on from step 6
    config = json.loads((second.out_dir / "deepspeed.json").read_text())
    assert config["zero_optimization"]["stage"] == 2 and config["train_batch_size"] == 16


def test_zero3_two_processes_with_cpu_offload(workdir: Path) -> None:
    run = run_recipe(
        "tiny-sft-zero3.yaml",
        workdir,
        "zero3-offload",
        "training.max_steps=10",
        "distributed.offload_optimizer=cpu",
        "distributed.offload_params=cpu",
        nproc=2,
    )
    assert_learned(run)
    zero = json.loads((run.out_dir / "deepspeed.json").read_text())["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "cpu"
    assert (run.out_dir / "final" / "model.safetensors").is_file()
