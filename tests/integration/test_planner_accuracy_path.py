"""The real-step measurement of `benchmarks/planner_accuracy.py --gpu`, run on CPU.

No GPU was ever lent to this project, so the CUDA measurement must work the first time one
is: this runs the same function (tests/support/real_step.py) on CPU, with tiny models built
from configs, for every method and under DeepSpeed ZeRO-2/3 (one process, gloo), and checks
that it trained what the planner says the method trains.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from planner.hf_config import spec_from_hf_config
from planner.layers import adapter_params, trainable_params
from planner.setups import METHODS, Method, Setup
from tests.conftest import ROOT
from tests.integration.recipe_runs import run_env

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from tests.support.real_step import one_gpu_setup, real_training_step  # noqa: E402

#: 3 layers, so that freeze (the last 2) leaves one decoder layer frozen.
CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
        "max_position_embeddings": 128,
    },
    "opt": {  # decoder layers at model.decoder.layers, tied embeddings, biases
        "model_type": "opt",
        "hidden_size": 64,
        "ffn_dim": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "vocab_size": 512,
        "max_position_embeddings": 128,
        "word_embed_proj_dim": 64,
    },
}
SEQ, MB, RANK, LR = 32, 2, 4, 1e-2  # a large lr: bf16 weights visibly move in 2 steps


def _setup(method: Method, zero: int = 0, ckpt: bool = False, targets: str = "all-linear") -> Setup:
    return one_gpu_setup(
        method,
        zero=zero,
        ckpt=ckpt,
        micro_batch=MB,
        seq_len=SEQ,
        lora_rank=RANK,
        lora_targets=targets,
    )


def _check_trained(got: dict[str, Any], config: dict[str, Any], setup: Setup) -> None:
    spec = spec_from_hf_config(config, name=config["model_type"], source="config")
    # The planner's per-method count (freeze: the last 2 decoder layers, every parameter
    # in them; adapters: the LoRA/DoRA parameters) is exactly what trained.
    assert got["params_trainable"] == trainable_params(spec, setup)
    if setup.method != "qlora":  # 4-bit weights pack two per byte: numel is not params
        assert got["params_total"] == spec.params_total + adapter_params(spec, setup)
    assert 0 < got["params_trainable"] <= got["params_total"]
    # Every trainable tensor moved (LoRA A only on the 2nd step, once B is non-zero) ...
    assert got["trainable_tensors"] > 0
    assert got["trainable_tensors_changed"] == got["trainable_tensors"]
    # ... and it learned: the same batch twice, the loss went down.
    losses = got["losses"]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert losses[1] < losses[0]
    # On CPU no memory is measured: None, never a made-up number.
    for key in ("allocated_peak_bytes", "reserved_peak_bytes", "non_torch_bytes"):
        assert got[key] is None
    assert got["device"] == "cpu"


@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("method", METHODS)
def test_real_step_trains_what_the_planner_counts(family: str, method: Method) -> None:
    config = CONFIGS[family]
    # Checkpointing where the recipes need extra care with it (frozen embeddings).
    setup = _setup(method, ckpt=method in ("freeze", "qlora", "lora"))
    result = real_training_step(config, setup, device="cpu", learning_rate=LR)
    got = {**result.__dict__, "process_peak_bytes": result.process_peak_bytes}
    _check_trained(got, config, setup)
    assert result.zero_stage == 0 and result.precision == "bf16-pure"
    assert got["process_peak_bytes"] is None


@pytest.mark.parametrize("targets", ["attention", "q,v"])
def test_real_step_lora_targets_are_the_planners(targets: str) -> None:
    """Planner target groups/roles become this model's module names (OPT: out_proj)."""
    config = CONFIGS["opt"]
    setup = _setup("lora", targets=targets)
    result = real_training_step(config, setup, device="cpu", learning_rate=LR)
    _check_trained(result.__dict__, config, setup)
    assert result.params_trainable < trainable_params(
        spec_from_hf_config(config, name="opt", source="config"), _setup("lora")
    )


def test_real_step_under_deepspeed_zero2_and_zero3(tmp_path: Path) -> None:
    """ZeRO-2 and ZeRO-3 through deepspeed.initialize, world size 1, gloo. In a subprocess:
    DeepSpeed keeps its process group for the life of the process."""
    pytest.importorskip("deepspeed")
    config = CONFIGS["llama"]
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "real_step.py"),
        *("--config", str(config_file), "--device", "cpu", "--method", "full,lora"),
        *("--zero", "2,3", "--seq-len", str(SEQ), "--micro-batch", str(MB)),
        *("--lora-rank", str(RANK), "--lr", str(LR), "--ckpt"),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=run_env(), cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(r["method"], r["zero_stage"]) for r in rows] == [
        ("full", 2),
        ("full", 3),
        ("lora", 2),
        ("lora", 3),
    ]
    for row in rows:
        setup = _setup(row["method"], zero=row["zero_stage"], ckpt=True)
        _check_trained(row, config, setup)
        assert row["precision"] == "bf16-mixed"
    # One process: the shards are the whole model, so ZeRO-2 and ZeRO-3 train the same.
    by = {(r["method"], r["zero_stage"]): r["losses"] for r in rows}
    assert by[("full", 2)] == pytest.approx(by[("full", 3)], rel=1e-3)
    assert by[("lora", 2)] == pytest.approx(by[("lora", 3)], rel=1e-3)


def test_real_step_refuses_cuda_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from tests.support.real_step import NoCudaError

    with pytest.raises(NoCudaError, match="no CUDA device"):
        real_training_step(CONFIGS["llama"], _setup("full"), device="cuda")
