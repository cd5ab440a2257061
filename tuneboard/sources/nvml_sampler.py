"""Sample every GPU of this machine through NVML into a `GpuSnapshot`.

Works against any `NvmlApi`: the real pynvml, or the fake. A call the GPU does not
support (NVMLError_NotSupported, NoPermission, FunctionNotFound) leaves that field None;
any other NVML error on a GPU marks that GPU with the error and keeps the others. No
driver or library gives a snapshot whose `error` says there is no NVIDIA GPU here.

PCIe throughput is a slow call (the driver samples the bus for ~20 ms per counter), so it
runs on its own slower cadence (`pcie_every_s`) and the last values are reused between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pynvml

from tuneboard.sources.nvml_api import NvmlApi
from tuneboard.sources.snapshots import GpuProcess, GpuSample, GpuSnapshot

T = TypeVar("T")

#: Errors that mean "this field is not available on this GPU / to this user".
_UNSUPPORTED = (
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_NoPermission,
    pynvml.NVMLError_FunctionNotFound,
)
#: Errors of nvmlInit that mean "there is no usable NVIDIA driver here".
_NO_DRIVER = (
    pynvml.NVMLError_LibraryNotFound,
    pynvml.NVMLError_DriverNotLoaded,
    pynvml.NVMLError_NoPermission,
    pynvml.NVMLError_LibRmVersionMismatch,
)
#: How long after a failed nvmlInit to try again (a driver loaded later, a container
#: whose devices appear late).
INIT_RETRY_S = 60.0


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _opt(fn: Callable[..., T], *args: Any) -> T | None:
    try:
        return fn(*args)
    except _UNSUPPORTED:
        return None


def process_name(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The command name of a local pid; None if it is not visible (another container)."""
    try:
        return (proc / str(pid) / "comm").read_text().strip() or None
    except OSError:
        return None


class NvmlSampler:
    def __init__(
        self,
        api: NvmlApi,
        node: str,
        *,
        pcie_every_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        name_of_pid: Callable[[int], str | None] | None = process_name,
    ) -> None:
        self.api = api
        self.node = node
        self.pcie_every_s = pcie_every_s
        self._clock = clock
        self._name_of_pid = name_of_pid
        self._handles: list[Any] | None = None
        self._driver: str | None = None
        self._init_error: str | None = None
        self._init_at: float | None = None
        self._memory_v2 = True
        self._pcie_at: float | None = None
        self._pcie: dict[int, tuple[float | None, float | None]] = {}

    def _ensure_open(self, now: float) -> bool:
        if self._handles is not None:
            return True
        if self._init_at is not None and now - self._init_at < INIT_RETRY_S:
            return False
        self._init_at = now
        try:
            self.api.nvmlInit()
        except _NO_DRIVER as exc:
            self._init_error = f"no NVIDIA GPU here (NVML: {exc})"
            return False
        except pynvml.NVMLError as exc:
            self._init_error = f"NVML could not start: {exc}"
            return False
        try:
            count = self.api.nvmlDeviceGetCount()
            self._handles = [self.api.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._driver = _opt(lambda: _text(self.api.nvmlSystemGetDriverVersion()))
        except pynvml.NVMLError as exc:
            self._init_error = f"NVML could not list GPUs: {exc}"
            self.api.nvmlShutdown()
            return False
        self._init_error = None if self._handles else "no NVIDIA GPU here (NVML sees 0 devices)"
        return True

    def sample(self) -> GpuSnapshot:
        now = self._clock()
        if not self._ensure_open(now):
            return GpuSnapshot(self.node, now, (), error=self._init_error)
        assert self._handles is not None
        refresh_pcie = self._pcie_at is None or now - self._pcie_at >= self.pcie_every_s
        if refresh_pcie:
            self._pcie_at = now
        gpus = tuple(self._gpu(i, h, refresh_pcie) for i, h in enumerate(self._handles))
        return GpuSnapshot(self.node, now, gpus, self._driver, self._init_error)

    def _memory(self, handle: Any) -> tuple[int | None, int | None, int | None]:
        """(used, total, reserved): the v2 API separates driver-reserved memory from used."""
        if self._memory_v2:
            try:
                m = self.api.nvmlDeviceGetMemoryInfo(handle, pynvml.nvmlMemory_v2)
                return int(m.used), int(m.total), int(m.reserved)
            except (*_UNSUPPORTED, pynvml.NVMLError_ArgumentVersionMismatch):
                self._memory_v2 = False
        m = _opt(self.api.nvmlDeviceGetMemoryInfo, handle)
        if m is None:
            return None, None, None
        return int(m.used), int(m.total), None

    def _gpu(self, index: int, handle: Any, refresh_pcie: bool) -> GpuSample:
        api = self.api
        name: str | None = None
        try:
            name = _text(api.nvmlDeviceGetName(handle))
            uuid = _opt(lambda: _text(api.nvmlDeviceGetUUID(handle)))
            util = _opt(api.nvmlDeviceGetUtilizationRates, handle)
            used, total, reserved = self._memory(handle)
            power = _opt(api.nvmlDeviceGetPowerUsage, handle)
            limit = _opt(api.nvmlDeviceGetEnforcedPowerLimit, handle)
            temp = _opt(api.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
            sm = _opt(api.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM)
            sm_max = _opt(api.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM)
            ecc_c = _opt(
                api.nvmlDeviceGetTotalEccErrors,
                handle,
                pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
                pynvml.NVML_VOLATILE_ECC,
            )
            ecc_u = _opt(
                api.nvmlDeviceGetTotalEccErrors,
                handle,
                pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                pynvml.NVML_VOLATILE_ECC,
            )
            if refresh_pcie:
                tx = _opt(api.nvmlDeviceGetPcieThroughput, handle, pynvml.NVML_PCIE_UTIL_TX_BYTES)
                rx = _opt(api.nvmlDeviceGetPcieThroughput, handle, pynvml.NVML_PCIE_UTIL_RX_BYTES)
                self._pcie[index] = (
                    None if tx is None else tx * 1024.0,  # NVML reports KB/s
                    None if rx is None else rx * 1024.0,
                )
            pcie_tx, pcie_rx = self._pcie.get(index, (None, None))
            procs = _opt(api.nvmlDeviceGetComputeRunningProcesses, handle)
        except pynvml.NVMLError as exc:
            return GpuSample(index=index, name=name, error=str(exc))
        return GpuSample(
            index=index,
            name=name,
            uuid=uuid,
            util_percent=None if util is None else float(util.gpu),
            memory_util_percent=None if util is None else float(util.memory),
            memory_used_bytes=used,
            memory_total_bytes=total,
            memory_reserved_bytes=reserved,
            temperature_c=None if temp is None else float(temp),
            power_mw=None if power is None else float(power),
            power_limit_mw=None if limit is None else float(limit),
            sm_clock_mhz=None if sm is None else float(sm),
            sm_clock_max_mhz=None if sm_max is None else float(sm_max),
            pcie_tx_bytes_per_s=pcie_tx,
            pcie_rx_bytes_per_s=pcie_rx,
            ecc_corrected_errors=ecc_c,
            ecc_uncorrected_errors=ecc_u,
            processes=None if procs is None else tuple(self._process(p) for p in procs),
        )

    def _process(self, p: Any) -> GpuProcess:
        used = getattr(p, "usedGpuMemory", None)
        pid = int(p.pid)
        return GpuProcess(
            pid=pid,
            name=self._name_of_pid(pid) if self._name_of_pid else None,
            used_memory_bytes=None if used is None else int(used),
        )

    def close(self) -> None:
        if self._handles is not None:
            self._handles = None
            try:
                self.api.nvmlShutdown()
            except pynvml.NVMLError:  # already shut down or the driver went away
                self._init_error = "NVML shut down"
