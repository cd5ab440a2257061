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
            str(_free_port()),
            "-m",
            "recipes.run",
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "recipes.run", *args]
    start = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=workdir, env=run_env(), capture_output=True, text=True, timeout=timeout
    )
    result = RecipeRun(
        proc.returncode, proc.stdout + proc.stderr, out_dir, time.monotonic() - start
    )
    metrics_file = out_dir / "metrics.jsonl"
    if metrics_file.is_file():
        result.metrics = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    status_file = out_dir / "status.json"
    if status_file.is_file():
        result.status = json.loads(status_file.read_text())
    return result


def _free_port() -> int:
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


def assert_learned(run: RecipeRun, factor: float = 0.9, tokens: bool = True) -> None:
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
    if tokens:
        assert last["tokens_seen"] > 0 and last["tokens_per_s"] > 0
    else:  # the trainer does not count tokens: reported as unknown, not as 0
        assert last["tokens_seen"] is None and last["tokens_per_s"] is None
