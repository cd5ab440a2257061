"""Preflight of the local machine (no SSH): the real probe, GPUs and the planner's fit check.

There is no NVIDIA driver here, so the GPU cases put a stand-in `nvidia-smi` first on the
PATH that prints what the real one prints for `--query-gpu=index,name,memory.total,
memory.free --format=csv,noheader,nounits` (the probe's only question to it). Everything
else, the probe, the checks, the planner, is the real code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.job.launch import Checked, LaunchRequest, check, connect, prepare
from launcher.preflight.checks import Check, NodeReport

pytestmark = pytest.mark.integration

A10_IDLE = "0, NVIDIA A10, 24564, 24000\n1, NVIDIA A10, 24564, 24000\n"
A800_BUSY = "0, NVIDIA A800-SXM4-80GB, 81920, 81050\n1, NVIDIA A800-SXM4-80GB, 81920, 20480\n"


def fake_nvidia_smi(folder: Path, output: str) -> Path:
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\n")
    script.chmod(0o755)
    return folder


def must(check: Check | None) -> Check:
    assert check is not None
    return check


def local_recipe(path: Path, model: str, method: str, data: str | None = None) -> Path:
    """A recipe for `model` on `data`; by default data.jsonl, one good row written beside it."""
    if data is None:
        data = "data.jsonl"
        (path.parent / data).write_text('{"prompt": "1+1=", "completion": "2"}\n')
    path.write_text(
        f"model: {{name: {model}}}\nmethod: {{kind: {method}}}\ndata: {{train: {data}}}\n"
        "training: {micro_batch_size: 1, seq_len: 2048}\n"
    )
    return path


def run_check(recipe: Path, tmp_path: Path, *, cpu: bool) -> tuple[Checked, NodeReport]:
    prepared = prepare(LaunchRequest(recipe_path=recipe, cpu=cpu, cwd=tmp_path))
    with connect(prepared) as pool:
        checked = check(prepared, pool)
    [node] = checked.report.nodes
    return checked, node


def test_no_gpu_fails_preflight_unless_the_run_is_on_cpu(tmp_path: Path) -> None:
    recipe = local_recipe(tmp_path / "r.yaml", "llama-2-7b", "lora")
    checked, node = run_check(recipe, tmp_path, cpu=False)
    gpus = must(node.check("gpus"))
    assert gpus.status == "fail" and gpus.detail.endswith("for a CPU run: --cpu")
    assert not checked.report.ok
    checked, node = run_check(recipe, tmp_path, cpu=True)
    assert must(node.check("gpus")).short == "CPU run"
    assert checked.report.ok and checked.fit.status == "skipped"


def test_detected_gpus_feed_the_planners_fit_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", A10_IDLE)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/local/bin:/usr/bin:/bin")
    lora = local_recipe(tmp_path / "lora.yaml", "1b", "lora")
    checked, node = run_check(lora, tmp_path, cpu=False)
    report, fit = checked.report, checked.fit
    assert must(node.check("gpus")).short == "2×A10" and report.nproc_per_node == 2
    assert report.ok and fit.status == "fits" and "on 1x2xA10:" in fit.reason

    full = local_recipe(tmp_path / "full.yaml", "3b", "full")
    checked, _ = run_check(full, tmp_path, cpu=False)
    fit = checked.fit
    assert fit.refused and fit.breakdown is not None
    assert fit.breakdown.total_bytes > fit.breakdown.usable_bytes
    assert checked.report.ok, checked.report.failures  # preflight itself passed
    assert checked.refused(False) and not checked.refused(True)  # --force launches it


def test_a_gpu_another_process_holds_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", A800_BUSY)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/local/bin:/usr/bin:/bin")
    recipe = local_recipe(tmp_path / "r.yaml", "llama-2-7b", "lora")
    checked, node = run_check(recipe, tmp_path, cpu=False)
    gpus = must(node.check("gpus"))
    assert gpus.status == "warn" and "GPU 1: 60.0 GiB" in gpus.detail
    assert checked.fit.min_free_gpu_bytes == 20480 * 1024**2


def test_the_data_is_checked_before_anything_starts(tmp_path: Path) -> None:
    """Present, readable, the format it claims, the sampled rows fit the task: each fails
    preflight with the data check's own line (recipes/train/data_check.py)."""
    recipe = local_recipe(tmp_path / "r.yaml", "llama-2-7b", "lora")
    checked, node = run_check(recipe, tmp_path, cpu=True)
    data = must(node.check("data"))
    assert data.status == "ok" and data.short == "1 rows" and checked.report.ok
    assert (
        data.detail.startswith("data: format prompt/completion") and "(checked here)" in data.detail
    )

    (tmp_path / "wrong.jsonl").write_text('{"question": "1+1=", "answer": "2"}\n')
    (tmp_path / "broken.jsonl").write_text('{"prompt": "1+1=", "completion": \n')
    for name, says in [
        ("wrong.jsonl", "columns found: question, answer; task sft needs columns"),
        ("broken.jsonl", "broken.jsonl line 1: not JSON"),
    ]:
        recipe = local_recipe(tmp_path / "r.yaml", "llama-2-7b", "lora", name)
        checked, node = run_check(recipe, tmp_path, cpu=True)
        data = must(node.check("data"))
        assert data.status == "fail" and says in data.detail, data
        assert not checked.report.ok

    recipe = local_recipe(tmp_path / "r.yaml", "llama-2-7b", "lora", "missing.jsonl")
    checked, node = run_check(recipe, tmp_path, cpu=True)
    assert must(node.check("files")).detail == "missing: missing.jsonl"
    assert must(node.check("data")).status == "skip"  # the files check says why


def test_an_output_dir_an_earlier_run_finished_in_is_warned(tmp_path: Path) -> None:
    """Run twice, the README's commands resumed the first run's last checkpoint and trained
    nothing, silently: preflight now says so, with the overrides that start fresh."""
    recipe = local_recipe(tmp_path / "r.yaml", "llama-2-7b", "lora")
    text = recipe.read_text().replace("training: {", "training: {max_steps: 40, ")
    recipe.write_text(text + "output: {dir: runs/tiny}\n")
    checkpoint = tmp_path / "runs" / "tiny" / "checkpoint-40"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    checked, node = run_check(recipe, tmp_path, cpu=True)
    resume = must(node.check("resume"))
    assert resume.status == "warn" and resume.short == "finished"
    assert "runs/tiny holds checkpoint-40, at max_steps 40" in resume.detail
    assert "training.resume=none (or output.dir=runs/tiny-2)" in resume.detail
    assert checked.report.ok  # a warning: resuming a finished run may be what was meant

    checkpoint.rename(checkpoint.with_name("checkpoint-20"))
    _, node = run_check(recipe, tmp_path, cpu=True)
    assert must(node.check("resume")).short == "step 20"
