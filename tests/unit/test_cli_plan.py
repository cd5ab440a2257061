"""`tuneboard plan` end to end in a subprocess: table, JSON schema, --write, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.schema import load_recipe
from tests.conftest import run_cli

PER_GPU_KEYS = {
    "weights",
    "gradients",
    "optimizer",
    "activations",
    "logits",
    "buffers",
    "framework_overhead",
    "total",
}
SETUP_KEYS = {
    "method",
    "precision",
    "optimizer",
    "zero_stage",
    "fsdp",
    "offload_optimizer",
    "offload_params",
    "gradient_checkpointing",
    "micro_batch_size",
    "seq_len",
}


def test_json_schema() -> None:
    result = run_cli("plan", "--model", "30b", "--gpus", "24xA800", "--json")
    assert result.returncode == 0, result.stderr
    data = result.json()
    assert data["model"]["name"] == "30b" and data["model"]["source"] == "size"
    assert data["model"]["params"] == 32_528_943_616
    assert data["cluster"]["nodes"] == 3 and data["cluster"]["gpus_per_node"] == 8
    assert data["cluster"]["gpu"]["name"] == "A800"
    assert data["cluster"]["gpu"]["memory_bytes"] == 80 * 1024**3
    assert len(data["candidates"]) > 10
    for c in data["candidates"]:
        assert set(c["setup"]) >= SETUP_KEYS
        assert set(c["per_gpu_bytes"]) >= PER_GPU_KEYS
        parts = sum(v for k, v in c["per_gpu_bytes"].items() if k != "total")
        # total is the peak of two moments, never more than the sum of all terms
        assert 0 < c["per_gpu_bytes"]["total"] <= parts
        assert isinstance(c["fits"], bool) and c["step_time_s"] > 0 and c["tokens_per_s"] > 0
        assert isinstance(c["per_node_cpu_bytes"], int) and isinstance(c["notes"], list)
    rec = data["recommended"]
    assert rec is not None and data["candidates"][rec]["fits"]
    assert data["candidates"][rec]["setup"]["method"] == "full"
    assert not any(c["fits"] for c in data["candidates"][:rec])


def test_table_output() -> None:
    result = run_cli("plan", "--model", "llama-2-7b", "--gpus", "8xA100-40GB")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "llama-2-7b" in out and "A100-40GB" in out
    assert "★" in out and "Recommended:" in out
    for col in ("weights", "grads", "optim", "activ", "logits", "total"):
        assert col in out


def test_pinned_plan_has_one_candidate() -> None:
    result = run_cli(
        "plan",
        "--model",
        "llama-2-7b",
        "--gpus",
        "8xA800",
        "--method",
        "lora",
        "--zero",
        "2",
        "--offload-optimizer",
        "none",
        "--gradient-checkpointing",
        "--micro-batch",
        "4",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert len(result.json()["candidates"]) == 1


def test_write_recipe(tmp_path: Path) -> None:
    target = tmp_path / "plan.yaml"
    result = run_cli(
        "plan",
        "--model",
        "qwen2.5-7b",
        "--gpus",
        "8xH100",
        "--method",
        "lora",
        "--write",
        str(target),
    )
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert text.startswith(f"# tuneboard launch {target}")
    recipe = load_recipe(target)
    assert recipe.method.kind == "lora"
    assert recipe.model.name == "Qwen/Qwen2.5-7B"
    # a second write over our own recipe is fine; over a foreign file it is refused
    assert (
        run_cli(
            "plan", "--model", "qwen2.5-7b", "--gpus", "8xH100", "--write", str(target)
        ).returncode
        == 0
    )
    foreign = tmp_path / "notes.yaml"
    foreign.write_text("my: notes\n")
    refused = run_cli("plan", "--model", "qwen2.5-7b", "--gpus", "8xH100", "--write", str(foreign))
    assert refused.returncode == 2 and foreign.read_text() == "my: notes\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "llama-2-7", "--gpus", "8xA800"], "llama-2-7b"),
        (["--model", "7b", "--gpus", "8xZZ9"], "unknown GPU 'ZZ9'"),
        (["--model", "7b", "--gpus", "12xA100"], "not a whole number"),
        (
            ["--model", "7b", "--gpus", "8xA800", "--offload-params", "cpu", "--zero", "2"],
            "needs ZeRO-3",
        ),
        (
            ["--model", "opt-66b", "--gpus", "24xA800", "--pp", "24"],
            "does not divide opt-66b's 64 layers",
        ),
        (
            ["--model", "7b", "--gpus", "8xA800", "--micro-batch", "-2"],
            "--micro-batch must be a positive",
        ),
        (
            ["--model", "7b", "--gpus", "8xA800", "--method", "prefix"],
            "--method 'prefix' is not one of",
        ),
        (
            ["--model", "7b", "--gpus", "8xA800", "--seq-len", "abc"],
            "--seq-len 'abc': expected an integer",
        ),
        (["--model", "7b", "--gpus", "8xA800", "--bogus"], "No such option: --bogus"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    result = run_cli("plan", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]


def test_no_gpus_and_no_driver_asks_for_gpus() -> None:
    result = run_cli("plan", "--model", "7b")
    if result.returncode == 0:
        pytest.skip("this machine has an NVIDIA GPU")
    assert result.returncode == 2
    assert "--gpus" in result.stderr and "Traceback" not in result.stderr


def test_help_teaches() -> None:
    result = run_cli("plan", "--help")
    assert result.returncode == 0
    assert "tuneboard plan --model 30b --gpus 24xA800" in result.stdout


def test_catalog_commands() -> None:
    models = run_cli("models", "--json")
    assert models.returncode == 0
    names = {m["name"] for m in models.json()}
    assert {"llama-2-70b", "mixtral-8x7b", "opt-66b", "bloom-176b", "yi-34b"} <= names
    gpus = run_cli("gpus", "--json")
    assert {"A800", "H100-SXM", "MI300X"} <= {g["name"] for g in gpus.json()}


def test_plan_output_fits_an_80_column_terminal() -> None:
    r = run_cli("plan", "--model", "30b", "--gpus", "24xA800", "--train-tokens", "2B",
                env={"COLUMNS": "80"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    long = [line for line in r.stdout.splitlines() if len(line) > 80]
    assert long == []
    assert "Recommended: full ZeRO-3 ckpt mb16\n" in r.stdout
