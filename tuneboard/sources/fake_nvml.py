"""A pynvml stand-in for machines without an NVIDIA driver: tests, demos, benchmarks.

`FakeNvml` implements the same calls as pynvml (tuneboard/sources/nvml_api.py) and
raises pynvml's own error classes, so `NvmlSampler` runs unchanged on top of it. Its GPUs
follow a deterministic function of the clock: a training-like load (util ~90-99 %, power
tracking load, temperature lagging it), or whatever `load` a test gives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

GIB = 1 << 30
A800_NAME = "NVIDIA A800-SXM4-80GB"
A800_MEMORY_BYTES = 81920 * 1024 * 1024  # what NVML reports for an A800 80GB (MiB x 2^20)


def training_load(phase: float) -> Callable[[float], float]:
    """Busy like a data-parallel step: high, with a short dip every ~6 s (the all-reduce)."""

    def load(t: float) -> float:
        cycle = (t + phase) % 6.0
        dip = 0.35 if cycle < 0.6 else 0.0
        return max(0.0, min(1.0, 0.95 + 0.04 * math.sin(t / 3.0 + phase) - dip))

    return load


@dataclass
class FakeGpu:
    name: str = A800_NAME
    memory_total_bytes: int = A800_MEMORY_BYTES
    memory_base_bytes: int = 58 * GIB
    power_limit_mw: int = 400_000
    sm_clock_max_mhz: int = 1410
    load: Callable[[float], float] = field(default_factory=lambda: training_load(0.0))
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    ecc_uncorrected: int = 0
    lost: bool = False


class FakeNvml:
    """Same calls and errors as pynvml; `unsupported` names calls that raise NotSupported."""

    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        clock: Callable[[], float] = time.time,
        driver_version: str = "535.183.06",
        unsupported: frozenset[str] = frozenset(),
        init_error: int | None = None,
    ) -> None:
        self.gpus = gpus
        self._clock = clock
        self.driver_version = driver_version
        self.unsupported = unsupported
        self.init_error = init_error
        self.initialized = False
        self.calls: dict[str, int] = {}

    # -- helpers -----------------------------------------------------------------
    def _call(self, fn: str, handle: int | None = None) -> FakeGpu | None:
        self.calls[fn] = self.calls.get(fn, 0) + 1
        if not self.initialized:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if fn in self.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if handle is None:
            return None
        gpu = self.gpus[handle]
        if gpu.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _gpu(self, fn: str, handle: int) -> tuple[FakeGpu, float]:
        gpu = self._call(fn, handle)
        assert gpu is not None
        return gpu, gpu.load(self._clock())

    # -- the pynvml surface ----------------------------------------------------------
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._call("nvmlShutdown")
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._call("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._call("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        gpu, _ = self._gpu("nvmlDeviceGetName", handle)
        return gpu.name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        self._gpu("nvmlDeviceGetUUID", handle)
        return f"GPU-fake-{id(self) % 10000:04d}-{handle:04d}"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        _, load = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=round(100 * load), memory=round(60 * load))

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: Any = None) -> Any:
        gpu, load = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        reserved = 512 * 1024 * 1024
        used = min(
            gpu.memory_total_bytes - reserved, int(gpu.memory_base_bytes * (0.9 + 0.1 * load))
        )
        free = gpu.memory_total_bytes - used - (reserved if version else 0)
        if version:
            return SimpleNamespace(
                total=gpu.memory_total_bytes, used=used, free=free, reserved=reserved
            )
        return SimpleNamespace(total=gpu.memory_total_bytes, used=used + reserved, free=free)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        _, load = self._gpu("nvmlDeviceGetTemperature", handle)
        return round(34 + 38 * load)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        gpu, load = self._gpu("nvmlDeviceGetPowerUsage", handle)
        return round(gpu.power_limit_mw * (0.16 + 0.78 * load))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        gpu, _ = self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle)
        return gpu.power_limit_mw

    def nvmlDeviceGetClockInfo(self, handle: int, clock_type: int) -> int:
        gpu, load = self._gpu("nvmlDeviceGetClockInfo", handle)
        return round(gpu.sm_clock_max_mhz * (0.75 + 0.25 * load)) if load > 0.05 else 210

    def nvmlDeviceGetMaxClockInfo(self, handle: int, clock_type: int) -> int:
        gpu, _ = self._gpu("nvmlDeviceGetMaxClockInfo", handle)
        return gpu.sm_clock_max_mhz

    def nvmlDeviceGetPcieThroughput(self, handle: int, counter: int) -> int:
        _, load = self._gpu("nvmlDeviceGetPcieThroughput", handle)
        return round((900_000 if counter == pynvml.NVML_PCIE_UTIL_TX_BYTES else 600_000) * load)

    def nvmlDeviceGetTotalEccErrors(self, handle: int, error_type: int, counter_type: int) -> int:
        gpu, _ = self._gpu("nvmlDeviceGetTotalEccErrors", handle)
        return gpu.ecc_uncorrected if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED else 0

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        gpu, _ = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in gpu.processes]


def fake_node(
    gpus: int,
    *,
    seed: int = 0,
    clock: Callable[[], float] = time.time,
    unsupported: frozenset[str] = frozenset(),
) -> FakeNvml:
    """An 8×A800-like node running one training process per GPU."""
    return FakeNvml(
        [
            FakeGpu(
                load=training_load(seed * 1.7 + i * 0.37),
                memory_base_bytes=(56 + (seed + i) % 5) * GIB,
                processes=[(40_000 + seed * 100 + i, (55 + (seed + i) % 5) * GIB)],
            )
            for i in range(gpus)
        ],
        clock=clock,
        unsupported=unsupported,
    )
