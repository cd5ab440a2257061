"""SFT recipes on CPU with a tiny model built on the spot: every method learns, resume, errors.

Each run is a real `python -m recipes.run` (or torchrun) subprocess on a shipped config from
recipes/configs/, on the toy data of recipes/train/toy_data.py: TRL, PEFT, bitsandbytes and
DeepSpeed take their real code paths. The five methods run two at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from recipes.train import toy_data as tinydata
from recipes.train.stack import BNB_CPU_KERNEL_WARNING
from tests.conftest import ROOT
from tests.integration.recipe_runs import assert_learned, run_env, run_recipe

pytestmark = pytest.mark.integration
pytest.importorskip("trl")
pytest.importorskip("peft")

STEPS = "training.max_steps=20"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recipes")
    tinydata.write(root / "data" / "tiny")
    return root


def test_sft_full_freeze_lora_qlora_dora_learn(workdir: Path) -> None:
    jobs = {
        "full": ("tiny-sft-lora.yaml", "method.kind=full", "training.learning_rate=1e-3"),
        "freeze": ("tiny-sft-freeze.yaml",),
        "lora": ("tiny-sft-lora.yaml", "output.export_merged=true"),
        "qlora": ("tiny-sft-qlora.yaml",),
        "dora": ("tiny-sft-dora-messages.yaml", "training.max_steps=30"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(run_recipe, config, workdir, f"sft-{name}", STEPS, *extra)
            for name, (config, *extra) in jobs.items()
        }
        runs = {name: future.result() for name, future in futures.items()}
    for name, run in runs.items():
        print(f"{name}: {run.seconds:.1f} s, losses {[round(x, 3) for x in run.losses()]}")
    for run in runs.values():
        assert_learned(run)

    # full and freeze save whole weights; the LoRA family saves adapters
    assert (runs["full"].out_dir / "final" / "model.safetensors").is_file()
    assert (runs["freeze"].out_dir / "final" / "model.safetensors").is_file()
    assert "freeze: training layers [1]" in runs["freeze"].output
    for name in ("lora", "qlora", "dora"):
        adapter = json.loads((runs[name].out_dir / "final" / "adapter_config.json").read_text())
        assert adapter["r"] == (16 if name == "dora" else 8)
        assert adapter["use_dora"] is (name == "dora")
    merged = runs["lora"].out_dir / "merged"
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    assert "qlora: base loaded in 4-bit nf4 (double quant), 14 Linear4bit layers" in (
        runs["qlora"].output
    )
    # the DoRA recipe holds out 10% and evaluates: eval lines carry eval_loss
    evals = [m for m in runs["dora"].metrics if m["event"] == "eval"]
    assert evals and all(isinstance(m["eval_loss"], float) for m in evals)


def test_a_lora_run_prints_no_bitsandbytes_kernel_warning(workdir: Path) -> None:
    # peft imports bitsandbytes in every run; on a CPU with AVX512-BF16 it then logged that
    # it could not fetch a Hub kernel (tests/unit/test_recipe_stack.py: only on such CPUs).
    run = run_recipe("tiny-sft-lora.yaml", workdir, "lora-quiet", "training.max_steps=2")
    assert run.returncode == 0, run.explain()
    assert BNB_CPU_KERNEL_WARNING not in run.output


def test_resume_auto_continues_with_the_step_counter(workdir: Path) -> None:
    config, common = "tiny-sft-lora.yaml", ("training.save_steps=5", "training.logging_steps=1")
    with ThreadPoolExecutor(max_workers=2) as pool:
        straight_f = pool.submit(
            run_recipe, config, workdir, "straight", "training.max_steps=10", *common
        )
        first = run_recipe(config, workdir, "resumed", "training.max_steps=5", *common)
        straight = straight_f.result()
    assert first.returncode == 0 and straight.returncode == 0, first.explain()
    assert (first.out_dir / "checkpoint-5").is_dir()
    # the same output dir, a longer run: resume: auto (the default) picks checkpoint-10
    second = run_recipe(config, workdir, "resumed", "training.max_steps=10", *common)
    assert second.returncode == 0, second.explain()
    assert second.status["resumed_from"].endswith("checkpoint-5")
    steps = [m["step"] for m in second.metrics]
    assert steps == list(range(1, 11)), steps  # 1-5 from the first run, 6-10 appended
    state = json.loads((second.out_dir / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["global_step"] == 10
    # weights, optimizer, scheduler and data order restored: the same losses as one
    # uninterrupted run of 10 steps
    assert second.losses() == pytest.approx(straight.losses(), rel=1e-4, abs=1e-5)
    assert second.metrics[-1]["tokens_seen"] == straight.metrics[-1]["tokens_seen"]


def test_data_errors_are_found_before_the_model_loads(workdir: Path) -> None:
    config = ROOT / "recipes" / "configs" / "tiny-sft-lora.yaml"
    cases = {
        "data.train=data/tiny/missing.jsonl": "no such file",
        "task=dpo": "columns found: prompt, completion; task dpo needs columns chosen, rejected",
        "data.train=data/tiny/text.jsonl data.format=messages": "needs columns messages",
    }
    for overrides, needle in cases.items():
        out = workdir / "runs" / "bad"
        code = (
            "import sys\nfrom recipes.run import main\n"
            f"rc = main({[str(config), f'output.dir={out}', *overrides.split()]!r})\n"
            "print('RC', rc, 'torch' in sys.modules, 'transformers' in sys.modules)"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=workdir, env=run_env(), capture_output=True, text=True
        )
        assert "RC 2 False False" in proc.stdout, proc.stdout + proc.stderr
        assert needle in proc.stderr, proc.stderr
        status = json.loads((out / "status.json").read_text())
        assert status["phase"] == "failed" and needle in status["error"]


def test_nan_loss_stops_the_run(workdir: Path) -> None:
    run = run_recipe(
        "tiny-sft-lora.yaml",
        workdir,
        "nan",
        "method.kind=full",
        "training.learning_rate=1e30",
        "training.logging_steps=1",
        "training.max_steps=8",
    )
    assert run.returncode == 1, run.explain()
    assert run.status["phase"] == "failed"
    assert "NonFiniteLossError" in run.status["error"] and "nan_policy" in run.status["error"]
    assert run.metrics[-1]["loss"] is None  # written as null, and the run stopped there
    assert run.metrics[-1]["step"] < 8


def test_torchrun_two_processes_deepspeed_zero3(workdir: Path) -> None:
    run = run_recipe("tiny-sft-zero3.yaml", workdir, "zero3", "training.max_steps=10", nproc=2)
    print(f"zero3: {run.seconds:.1f} s, losses {run.losses()}")
    assert_learned(run)
    ds = json.loads((run.out_dir / "deepspeed.json").read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["train_batch_size"] == 16
    # 2 ranks x micro batch 8: 16 sequences per step; tokens counted over both ranks
    assert run.metrics[-1]["epoch"] == pytest.approx(10 * 16 / 256)
    assert (run.out_dir / "final" / "model.safetensors").is_file()  # gathered on save
