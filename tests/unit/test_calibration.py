"""`tuneboard plan --calibrate`: finished jobs' CUDA peaks -> this cluster's allocator and
non-PyTorch constants -> later plans use them and say so. The job directories are the
launcher's own format (state.json via JobDir.write_state); their numbers stand in for a
GPU run, which this machine cannot make."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from launcher.job.store import JobDir, PlannedMemory, Progress, RankMemory
from planner.calibration import RankSample, choose, fit, load, save
from planner.errors import PlannerInputError
from tests.conftest import run_cli
from tests.support.jobs import make_state

GIB = 1024**3


def _sample(job: str, alloc: float, reserved: float, used: float | None) -> RankSample:
    return RankSample(
        job=job,
        gpu_name="A800",
        multi_node=False,
        torch_version="2.13.0",
        allocated_peak_bytes=int(alloc * GIB),
        reserved_peak_bytes=int(reserved * GIB),
        device_used_bytes=None if used is None else int(used * GIB),
    )


def test_the_fit_keeps_the_largest_share_and_overhead(tmp_path: Path) -> None:
    samples = [
        _sample("a", 50, 55, 56.5),  # +10%, 1.5 GiB outside
        _sample("a", 50, 60, 61.0),  # +20%, 1.0 GiB
        _sample("b", 40, 42, None),  # no NVML: counts for the share only
        _sample("b", 0, 0, 1.0),  # not a measurement
    ]
    [cal] = fit(samples, "f.json")
    assert cal.fragmentation_fraction == pytest.approx(0.2)
    assert cal.non_torch_bytes == int(56.5 * GIB) - int(55 * GIB)
    assert (cal.ranks, cal.jobs) == (3, 2)
    path = tmp_path / "cal.json"
    other = dataclasses.replace(cal, gpu_name="H100", source="x")
    save(path, [other])
    save(path, [cal])  # adds A800, keeps H100
    loaded = load(path)
    assert {c.gpu_name for c in loaded} == {"A800", "H100"}
    assert choose(loaded, "A800", False) == dataclasses.replace(cal, source=str(path))
    assert choose(loaded, "A800", True) is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlannerInputError, match=r"bad\.json: cannot be read"):
        load(tmp_path / "bad.json")


def _job(root: Path, job_id: str, memory: tuple[RankMemory, ...], gpu: str | None) -> None:
    planned = PlannedMemory("full ZeRO-3 ckpt mb4", gpu, None, 40 * GIB)
    state = make_state(job_id, 1.0, planned=planned)
    state = dataclasses.replace(
        state, nodes=state.nodes[:1], progress=Progress(step=10, memory=memory)
    )
    JobDir.create(job_id, root).write_state(state)


def test_calibrate_then_plan_with_it(tmp_path: Path) -> None:
    home = tmp_path / "state" / "tuneboard"
    cuda = (
        RankMemory(0, "g0", "cuda:0", 40 * GIB, 46 * GIB, 47 * GIB + GIB // 4, None, "2.13.0"),
        RankMemory(1, "g0", "cuda:1", 40 * GIB, 44 * GIB, 45 * GIB, None, "2.13.0"),
    )
    _job(home, "gpu-0101-000000-aaaa", cuda, "A800")
    _job(home, "cpu-0101-000000-bbbb", (RankMemory(0, "vm", "cpu", rss_peak_bytes=GIB),), None)
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    cal_file = tmp_path / "cfg" / "tuneboard" / "calibration.json"

    r = run_cli("plan", "--calibrate", "gpu-0101", "--calibrate", "cpu-0101", env=env)
    assert r.returncode == 0, r.stderr
    assert "A800 (one node, torch 2.13.0): allocator +15.0% over the tensors" in r.stdout
    assert "1.25 GiB outside PyTorch per GPU (from 2 ranks of 1 jobs)" in r.stdout
    assert "skipped cpu-0101-000000-bbbb: a CPU run (RSS only)" in r.stdout
    assert json.loads(cal_file.read_text())["entries"][0]["gpu_name"] == "A800"

    plan = run_cli("plan", "--model", "7b", "--gpus", "8xA800", "--json", env=env).json()
    cal = plan["cluster"]["calibration"]
    assert cal["non_torch_bytes"] == GIB + GIB // 4 and cal["source"] == str(cal_file)
    rec = plan["candidates"][plan["recommended"]]["per_gpu_bytes"]
    assert rec["framework_overhead"] == GIB + GIB // 4
    tensors = rec["total"] - rec["framework_overhead"] - rec["fragmentation"]
    assert rec["fragmentation"] == pytest.approx(0.15 * tensors, abs=2)
    shown = run_cli("plan", "--model", "7b", "--gpus", "8xA800", env=env).stdout
    assert "calibrated on this cluster's runs: allocator +15.0%" in shown
    # other GPUs, and --calibration none, plan with the built-in constants
    other = run_cli("plan", "--model", "7b", "--gpus", "8xH100", "--json", env=env).json()
    assert other["cluster"]["calibration"] is None
    off = run_cli("plan", "-m", "7b", "-g", "8xA800", "--calibration", "none", "--json", env=env)
    assert off.json()["cluster"]["calibration"] is None


def test_calibrate_refuses_what_it_cannot_fit(tmp_path: Path) -> None:
    home = tmp_path / "state" / "tuneboard"
    _job(home, "cpu-0101-000000-bbbb", (RankMemory(0, "vm", "cpu", rss_peak_bytes=GIB),), None)
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    r = run_cli("plan", "--calibrate", "cpu-0101", env=env)
    assert r.returncode == 2 and r.stderr.startswith("error: --calibrate: nothing to fit")
    assert "a CPU run (RSS only)" in r.stderr and "Traceback" not in r.stderr
    missing = run_cli("plan", "-m", "7b", "-g", "8xA800", "--calibration", "nope.json", env=env)
    assert missing.returncode == 2 and "--calibration nope.json: no such file" in missing.stderr
    no_model = run_cli("plan", "--gpus", "8xA800", env=env)
    assert no_model.returncode == 2 and "--model/-m is required" in no_model.stderr
