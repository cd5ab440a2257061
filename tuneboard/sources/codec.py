"""Snapshots <-> JSON objects: the format of `--record` files, replays and the agent stream.

`encode` gives a plain dict with a `kind` key; `decode` checks it back into the frozen
dataclass and raises `CodecError` naming what is wrong. NaN and infinity pass through
as JSON's `NaN`/`Infinity` (Python's json writes and reads them; a NaN loss is data).
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import Any, TypeVar

from launcher.job.store import rank_memory
from tuneboard.sources.snapshots import (
    PHASES,
    GpuProcess,
    GpuSample,
    GpuSnapshot,
    HostSnapshot,
    JobInfo,
    LogSnapshot,
    MetricsSnapshot,
    Phase,
    Snapshot,
    SourceStatus,
    StatusSnapshot,
    StepMetrics,
)

KINDS: dict[str, type[Any]] = {
    "gpus": GpuSnapshot,
    "host": HostSnapshot,
    "metrics": MetricsSnapshot,
    "status": StatusSnapshot,
    "logs": LogSnapshot,
    "job": JobInfo,
    "source": SourceStatus,
}
_KIND_OF: dict[type[Any], str] = {cls: kind for kind, cls in KINDS.items()}

T = TypeVar("T")


class CodecError(ValueError):
    """A JSON object that is not a valid snapshot."""


def encode(snapshot: Snapshot) -> dict[str, Any]:
    data = asdict(snapshot)
    data["kind"] = _KIND_OF[type(snapshot)]
    return data


def decode(data: object) -> Snapshot:
    if not isinstance(data, dict):
        raise CodecError(f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    if kind == "gpus":
        return GpuSnapshot(
            node=_str(data, "node"),
            time_s=_float(data, "time_s"),
            gpus=tuple(_gpu(g) for g in _list(data, "gpus")),
            driver_version=_opt_str(data, "driver_version"),
            error=_opt_str(data, "error"),
        )
    if kind == "host":
        return _flat(HostSnapshot, data)
    if kind == "metrics":
        return MetricsSnapshot(
            time_s=_float(data, "time_s"),
            records=tuple(step_metrics(r) for r in _list(data, "records")),
            bad_lines=int(_opt_float(data, "bad_lines") or 0),
        )
    if kind == "status":
        return status_from(data, _float(data, "time_s"))
    if kind == "logs":
        lines = _list(data, "lines")
        if not all(isinstance(line, str) for line in lines):
            raise CodecError("logs.lines: expected strings")
        return LogSnapshot(_str(data, "node"), _float(data, "time_s"), tuple(lines))
    if kind == "job":
        return _flat(JobInfo, data)
    if kind == "source":
        return _flat(SourceStatus, data)
    raise CodecError(f"unknown snapshot kind {kind!r}; expected one of {', '.join(KINDS)}")


def step_metrics(data: object) -> StepMetrics:
    """One metrics.jsonl object -> StepMetrics (unknown keys ignored, `step` required)."""
    if not isinstance(data, dict):
        raise CodecError(f"metrics line: expected a JSON object, got {type(data).__name__}")
    if "step" not in data:
        raise CodecError("metrics line: no 'step'")
    if "memory_peak_bytes" not in data and isinstance(data.get("memory"), list):
        data = {**data, **_largest_peak(data["memory"])}
    return _flat(StepMetrics, data)


def _largest_peak(memory: list[Any]) -> dict[str, Any]:
    """The largest rank's measured peak of a metrics line's `memory` list (reserved on
    CUDA, RSS on CPU: launcher.job.store.RankMemory); nothing when no rank has one."""
    ranks = rank_memory(memory)
    for measure in ("reserved", "RSS"):
        found = [m.measured_bytes for m in ranks if m.measure == measure]
        peaks = [v for v in found if v is not None]
        if peaks:
            return {"memory_peak_bytes": max(peaks), "memory_measure": measure}
    return {}


def status_from(data: dict[str, Any], time_s: float) -> StatusSnapshot:
    """A status.json object -> StatusSnapshot; an unknown phase is kept as raw_phase."""
    raw = data.get("phase")
    phase: Phase | None = None
    for p in PHASES:
        if raw == p:
            phase = p
    raw_phase = None if phase is not None or raw is None else str(raw)
    return StatusSnapshot(
        time_s=time_s, phase=phase, error=_opt_str(data, "error"), raw_phase=raw_phase
    )


def _gpu(data: object) -> GpuSample:
    if not isinstance(data, dict):
        raise CodecError("gpus[]: expected an object")
    procs = data.get("processes")
    processes = None
    if procs is not None:
        if not isinstance(procs, list):
            raise CodecError("gpus[].processes: expected a list")
        processes = tuple(_flat(GpuProcess, p) for p in procs)
    return _flat(GpuSample, {**data, "processes": processes}, nested=("processes",))


_INT_FIELDS = {
    "index",
    "pid",
    "step",
    "total_steps",
    "tokens_seen",
    "gpu_mem_peak_bytes",
    "memory_peak_bytes",
    "planned_bytes",
    "used_memory_bytes",
    "memory_used_bytes",
    "memory_total_bytes",
    "memory_reserved_bytes",
    "ecc_corrected_errors",
    "ecc_uncorrected_errors",
    "cpu_count",
    "params",
    "gpus",
}
_STR_FIELDS = {
    "name",
    "uuid",
    "error",
    "node",
    "source",
    "message",
    "model",
    "memory_measure",
    "planned_setup",
}


def _flat(cls: type[T], data: object, nested: tuple[str, ...] = ()) -> T:
    """Build a dataclass of scalar fields from a dict, converting and checking each."""
    if not isinstance(data, dict):
        raise CodecError(f"{cls.__name__}: expected an object")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name in nested or value is None:
            kwargs[f.name] = value
        elif f.name == "connected":
            kwargs[f.name] = bool(value)
        elif f.name in _STR_FIELDS:
            kwargs[f.name] = str(value)
        elif f.name in _INT_FIELDS:
            kwargs[f.name] = _to_int(value, f"{cls.__name__}.{f.name}")
        else:
            kwargs[f.name] = _to_float(value, f"{cls.__name__}.{f.name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise CodecError(f"{cls.__name__}: {exc}") from None


def _to_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodecError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CodecError(f"{where}: expected a finite number, got {value!r}")
    return int(value)


def _to_float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodecError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise CodecError(f"{key}: expected a string, got {value!r}")
    return value


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else str(value)


def _float(data: dict[str, Any], key: str) -> float:
    return _to_float(data.get(key), key)


def _opt_float(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    return None if value is None else _to_float(value, key)


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise CodecError(f"{key}: expected a list, got {type(value).__name__}")
    return value
