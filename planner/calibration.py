"""This user's GPUs, measured: the allocator and non-PyTorch constants fitted from finished
jobs, kept in a calibration file that later plans use (`tuneboard plan --calibrate`).

Each rank of a launched job records its peaks (recipes/train/memory_peaks.py: tensor
peak `allocated`, the caching allocator's `reserved`, NVML's `used`). Two constants
follow from them per GPU model, torch version and single/multi-node:
- fragmentation_fraction = (reserved - allocated) / allocated: what the caching
  allocator holds beyond the tensors (the planner's 5% of the dynamic bytes is a guess);
- non_torch_bytes = used - reserved: CUDA context, cuBLAS/cuDNN workspaces, NCCL buffers
  (the planner's 0.6 GiB + 64 MiB + 0.5-1 GiB are public figures, not this machine's).
The largest value seen is kept, not the median: a plan must not be low.

Pure Python (json): the CLI reads job directories and passes plain numbers in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from planner.errors import PlannerInputError
from planner.specs import Calibration

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RankSample:
    """One rank of one finished job, on CUDA."""

    job: str
    gpu_name: str
    multi_node: bool
    torch_version: str | None
    allocated_peak_bytes: int
    reserved_peak_bytes: int
    device_used_bytes: int | None


def fit(samples: Iterable[RankSample], source: str) -> list[Calibration]:
    """One Calibration per (GPU, single/multi-node, torch version) seen in `samples`."""
    groups: dict[tuple[str, bool, str | None], list[RankSample]] = {}
    for s in samples:
        if s.allocated_peak_bytes <= 0 or s.reserved_peak_bytes < s.allocated_peak_bytes:
            continue  # not a usable measurement
        groups.setdefault((s.gpu_name, s.multi_node, s.torch_version), []).append(s)
    out = []
    for (gpu, multi, torch), group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        frag = max(
            (s.reserved_peak_bytes - s.allocated_peak_bytes) / s.allocated_peak_bytes for s in group
        )
        outside = [
            s.device_used_bytes - s.reserved_peak_bytes
            for s in group
            if s.device_used_bytes is not None and s.device_used_bytes >= s.reserved_peak_bytes
        ]
        if not outside:
            continue  # without NVML the non-PyTorch part cannot be measured
        out.append(
            Calibration(
                gpu_name=gpu,
                multi_node=multi,
                torch_version=torch,
                fragmentation_fraction=frag,
                non_torch_bytes=max(outside),
                ranks=len(group),
                jobs=len({s.job for s in group}),
                source=source,
            )
        )
    return out


def save(path: Path, calibrations: Sequence[Calibration]) -> None:
    """Write (replace) the calibration file, keeping entries for other GPUs / versions."""
    kept = (
        [c for c in load(path) if not any(_key(c) == _key(new) for new in calibrations)]
        if path.is_file()
        else []
    )
    entries = [
        {k: v for k, v in asdict(c).items() if k != "source"} for c in (*kept, *calibrations)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "entries": entries}, indent=1))
    tmp.replace(path)


def load(path: Path) -> list[Calibration]:
    """The entries of a calibration file. Raises PlannerInputError naming what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlannerInputError(f"calibration file {path}: cannot be read ({exc})") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise PlannerInputError(f"calibration file {path}: no 'entries' list")
    out = []
    for i, e in enumerate(entries):
        try:
            out.append(Calibration(**{**e, "source": str(path)}))
        except TypeError as exc:
            raise PlannerInputError(f"calibration file {path}: entries[{i}]: {exc}") from None
    return out


def choose(
    calibrations: Iterable[Calibration], gpu_name: str, multi_node: bool
) -> Calibration | None:
    """The entry for this GPU and node count; the newest torch version when several."""
    found = [c for c in calibrations if c.gpu_name == gpu_name and c.multi_node == multi_node]
    return max(found, key=lambda c: c.torch_version or "") if found else None


def _key(c: Calibration) -> tuple[str, bool, str | None]:
    return (c.gpu_name, c.multi_node, c.torch_version)
