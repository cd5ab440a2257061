"""Run a recipe as a user does (`python -m recipes.run`, or torchrun); read what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

CONFIGS = ROOT / "recipes" / "configs"


@dataclass
class RecipeRun:
    returncode: int
    output: str
    out_dir: Path
    seconds: float
    metrics: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)

    def losses(self) -> list[float]:
        return [m["loss"] for m in self.metrics if m["event"] == "train" and m["loss"] is not None]

    def explain(self) -> str:
        return f"rc={self.returncode} status={self.status}\n{self.output[-4000:]}"


def run_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",  # tests run two trainings side by side on two cores
        "TORCH_EXTENSIONS_DIR": os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions")
        ),
        "TOKENIZERS_PARALLELISM": "false",
    }


def run_recipe(
    config: str,
    workdir: Path,
    name: str,
    *overrides: str,
    nproc: int = 1,
    timeout: float = 600,
) -> RecipeRun:
    """Run recipes/configs/<config> in workdir (where data/tiny lives), output in runs/<name>."""
    out_dir = workdir / "runs" / name
    args = [str(CONFIGS / config), f"output.dir={out_dir}", *overrides]
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(free_port()),
            "-m",
            "recipes.run",
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "recipes.run", *args]
    start = time.monotonic()
    with subprocess.Popen(
        cmd, cwd=workdir, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # TERM first: torchrun forwards it to its workers, which run in their own
            # sessions; a KILL of torchrun alone would leave them running (measured).
            proc.terminate()
            try:
                output, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            output += f"\n[recipe_runs] timed out after {timeout:.0f} s"
    result = RecipeRun(proc.returncode, output, out_dir, time.monotonic() - start)
    metrics_file = out_dir / "metrics.jsonl"
    if metrics_file.is_file():
        result.metrics = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    status_file = out_dir / "status.json"
    if status_file.is_file():
        result.status = json.loads(status_file.read_text())
    return result


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


METRIC_KEYS = {
    "event",
    "step",
    "total_steps",
    "epoch",
    "loss",
    "grad_norm",
    "learning_rate",
    "tokens_seen",
    "tokens_per_s",
    "elapsed_s",
    "eta_s",
    "gpu_mem_peak_bytes",
}


def assert_learned(run: RecipeRun, factor: float = 0.9) -> None:
    """Finished, every line has the documented keys, and the loss went down."""
    assert run.returncode == 0, run.explain()
    assert run.status["phase"] == "done" and run.status["error"] is None, run.explain()
    assert run.metrics, run.explain()
    for line in run.metrics:
        assert set(line) >= METRIC_KEYS, line
        assert line["gpu_mem_peak_bytes"] is None  # no CUDA here
    steps = [m["step"] for m in run.metrics if m["event"] == "train"]
    assert (
        steps == sorted(steps) and steps[-1] == run.metrics[-1]["total_steps"] == run.status["step"]
    )
    losses = run.losses()
    assert len(losses) >= 3, losses
    assert losses[-1] < factor * losses[0], f"loss did not go down: {losses}"
    last = [m for m in run.metrics if m["event"] == "train"][-1]
    assert last["eta_s"] == 0
    assert last["tokens_seen"] > 0 and last["tokens_per_s"] > 0


def check_pissa_conversion(out_dir: Path, checkpoint: str, layers: tuple[str, ...]) -> None:
    """PiSSA, from the files a run wrote: the initial adapter is the top-r SVD of the base
    weight; the trained model (residual base + checkpoint adapter) equals the original base +
    final/ (a plain rank-2r LoRA) and, when exported, merged/."""
    import torch
    from safetensors.torch import load_file

    def adapter(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        config = json.loads((folder / "adapter_config.json").read_text())
        return load_file(str(folder / "adapter_model.safetensors")), config

    base = load_file(str(out_dir / "tiny-base" / "model.safetensors"))
    initial, initial_cfg = adapter(out_dir / "pissa_init")
    trained, _ = adapter(out_dir / checkpoint)
    final, final_cfg = adapter(out_dir / "final")
    merged_file = out_dir / "merged" / "model.safetensors"
    merged = load_file(str(merged_file)) if merged_file.is_file() else None
    rank, scale = initial_cfg["r"], initial_cfg["lora_alpha"] / initial_cfg["r"]
    assert final_cfg["r"] == 2 * rank and final_cfg["init_lora_weights"] is True, final_cfg
    assert final_cfg["lora_alpha"] / final_cfg["r"] == scale
    for layer in layers:
        weight = base[f"{layer}.weight"]
        key = f"base_model.model.{layer}.lora_%s.weight"
        a0, b0 = initial[key % "A"], initial[key % "B"]
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        principal = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
        assert torch.allclose(scale * b0 @ a0, principal, atol=1e-6), layer
        effective = weight - scale * b0 @ a0 + scale * trained[key % "B"] @ trained[key % "A"]
        assert (effective - weight).abs().max() > 1e-3, f"{layer} did not train"
        assert final[key % "A"].shape[0] == 2 * rank
        converted = weight + scale * final[key % "B"] @ final[key % "A"]
        assert torch.allclose(converted, effective, atol=1e-6), layer
        if merged is not None:
            assert torch.allclose(merged[f"{layer}.weight"], effective, atol=1e-6), layer
