"""The snapshot messages every source produces: frozen, unit-suffixed, None = not available.

A snapshot is what one source saw at one moment (`time_s`: wall-clock seconds since the
epoch, when it was sampled). The dashboard's state folds them in; the recorder writes
them out and the replay reads them back (tuneboard/sources/codec.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["loading", "training", "saving", "done", "failed"]
PHASES: tuple[Phase, ...] = ("loading", "training", "saving", "done", "failed")


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A compute process on a GPU."""

    pid: int
    name: str | None
    used_memory_bytes: int | None


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one moment. Any field the GPU or driver does not support is None."""

    index: int
    name: str | None = None
    uuid: str | None = None
    util_percent: float | None = None
    memory_util_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    memory_reserved_bytes: int | None = None
    temperature_c: float | None = None
    power_mw: float | None = None
    power_limit_mw: float | None = None
    sm_clock_mhz: float | None = None
    sm_clock_max_mhz: float | None = None
    pcie_tx_bytes_per_s: float | None = None
    pcie_rx_bytes_per_s: float | None = None
    ecc_corrected_errors: int | None = None
    ecc_uncorrected_errors: int | None = None
    processes: tuple[GpuProcess, ...] | None = None
    #: Set when this GPU could not be read at all (e.g. "GPU is lost").
    error: str | None = None


@dataclass(frozen=True, slots=True)
class GpuSnapshot:
    """Every GPU of one node. `error` set (and `gpus` empty) when NVML is not usable there."""

    node: str
    time_s: float
    gpus: tuple[GpuSample, ...]
    driver_version: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """A node's CPU and RAM, from /proc."""

    node: str
    time_s: float
    cpu_percent: float | None
    cpu_count: int | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    load_1m: float | None = None


@dataclass(frozen=True, slots=True)
class StepMetrics:
    """One line of a recipe's `<output>/metrics.jsonl` (one logging step)."""

    step: int
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    grad_norm: float | None = None
    learning_rate: float | None = None
    tokens_seen: int | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    gpu_mem_peak_bytes: int | None = None
    #: The largest rank's peak so far (from the line's per-rank `memory`): the caching
    #: allocator's reserved peak on CUDA, the process's peak RSS on a CPU run.
    memory_peak_bytes: int | None = None
    memory_measure: str | None = None  # "reserved" | "RSS"


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """New metrics lines since the last poll."""

    time_s: float
    records: tuple[StepMetrics, ...]
    #: Complete lines that were not a metrics object (counted, shown as a warning).
    bad_lines: int = 0


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """`<output>/status.json`: the training program's phase."""

    time_s: float
    phase: Phase | None
    error: str | None = None
    #: The raw phase when it is not one of PHASES (phase is None then).
    raw_phase: str | None = None


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """New log lines of one node (or one log file, named by its stem)."""

    node: str
    time_s: float
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What the dashboard knows about the job, for MFU and the title."""

    time_s: float
    name: str | None = None
    model: str | None = None
    params: int | None = None
    #: Model FLOPs per trained token (forward + backward, no recompute), for MFU.
    flops_per_token: float | None = None
    gpus: int | None = None
    #: The planner's tensor bytes per GPU at launch (the launcher's state.json `planned`).
    planned_bytes: int | None = None
    planned_setup: str | None = None


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A source's own health: connected, reconnecting, failed to read."""

    source: str
    node: str | None
    time_s: float
    connected: bool
    message: str | None = None


Snapshot = (
    GpuSnapshot
    | HostSnapshot
    | MetricsSnapshot
    | StatusSnapshot
    | LogSnapshot
    | JobInfo
    | SourceStatus
)
