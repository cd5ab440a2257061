"""`tuneboard plan --calibrate JOB...`: finished jobs' measured peaks -> the calibration
file later plans use (planner/calibration.py has the fit), and finding that file.

A job contributes when its state.json has the plan made at launch for a GPU
(`planned.gpu_name`) and every rank's CUDA peaks (`progress.memory`, from the recipes'
metrics). A CPU run measures RSS only: it calibrates nothing, and the message says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from planner.calibration import RankSample, fit, save
from planner.errors import UserInputError
from planner.specs import Calibration

#: `--calibration none` plans with the built-in constants.
NO_CALIBRATION = "none"


def default_calibration_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tuneboard" / "calibration.json"


def job_samples(jobs: list[str]) -> tuple[list[RankSample], list[str]]:
    """(samples, one line per job that gave none and why) from job ids or directories."""
    from launcher.job.store import JobDir, find_job

    samples: list[RankSample] = []
    skipped: list[str] = []
    for text in jobs:
        path = Path(text).expanduser()
        job = JobDir(path) if (path / "state.json").is_file() else find_job(text)
        state = job.read_state()
        planned = state.planned
        memory = state.progress.memory if state.progress is not None else ()
        cuda = [m for m in memory if m.device != "cpu" and m.allocated_peak_bytes is not None]
        if planned is None or planned.gpu_name is None or not cuda:
            why = "a CPU run (RSS only)" if memory and not cuda else "no CUDA peaks recorded"
            if planned is None or planned.gpu_name is None:
                why += ", no GPU plan" if memory else ""
            skipped.append(f"{state.id}: {why}")
            continue
        for m in cuda:
            assert m.allocated_peak_bytes is not None
            samples.append(
                RankSample(
                    job=state.id,
                    gpu_name=planned.gpu_name,
                    multi_node=len(state.nodes) > 1,
                    torch_version=m.torch_version,
                    allocated_peak_bytes=m.allocated_peak_bytes,
                    reserved_peak_bytes=m.reserved_peak_bytes or m.allocated_peak_bytes,
                    device_used_bytes=m.device_used_bytes,
                )
            )
    return samples, skipped


def calibrate(jobs: list[str], path: Path) -> tuple[list[Calibration], list[str]]:
    """Fit and save; raises UserInputError when the jobs hold nothing to fit."""
    samples, skipped = job_samples(jobs)
    fitted = fit(samples, str(path))
    if not fitted:
        reasons = "; ".join(skipped) or "no rank recorded NVML's used memory"
        raise UserInputError(
            f"--calibrate: nothing to fit from {len(jobs)} job(s) ({reasons}); it needs "
            "finished GPU jobs launched by tuneboard (their ranks record CUDA peaks)"
        )
    save(path, fitted)
    return fitted, skipped
