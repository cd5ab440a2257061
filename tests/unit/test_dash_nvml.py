"""The NVML sampler on the fake NVML (same calls, pynvml's own errors) and on the real one."""

from __future__ import annotations

import pynvml
import pytest

from tuneboard.sources.fake_nvml import A800_MEMORY_BYTES, FakeGpu, FakeNvml, fake_node
from tuneboard.sources.gpu_sources import FakeClusterSource, LocalGpuSource
from tuneboard.sources.nvml_sampler import NvmlSampler
from tuneboard.sources.snapshots import GpuSnapshot, HostSnapshot


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_every_field_of_a_busy_a800() -> None:
    clock = Clock()
    sampler = NvmlSampler(fake_node(2, clock=clock), "n0", clock=clock)
    snap = sampler.sample()
    assert snap.error is None and snap.driver_version == "535.183.06" and len(snap.gpus) == 2
    g = snap.gpus[0]
    assert g.name == "NVIDIA A800-SXM4-80GB" and g.uuid is not None and g.error is None
    assert g.util_percent is not None and 50 <= g.util_percent <= 100
    assert g.memory_total_bytes == A800_MEMORY_BYTES
    assert g.memory_reserved_bytes == 512 << 20  # v2 API: reserved apart from used
    assert g.memory_used_bytes is not None and 50 << 30 < g.memory_used_bytes < 70 << 30
    assert g.power_limit_mw == 400_000 and g.power_mw is not None and g.power_mw < 400_000
    assert g.temperature_c is not None and g.sm_clock_mhz is not None
    assert g.sm_clock_max_mhz == 1410
    assert g.pcie_tx_bytes_per_s is not None and g.pcie_tx_bytes_per_s > 1e8  # KB/s -> B/s
    assert g.ecc_uncorrected_errors == 0
    assert g.processes is not None and g.processes[0].used_memory_bytes is not None


def test_unsupported_fields_are_none_and_memory_falls_back_to_v1() -> None:
    unsupported = frozenset(
        {"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetPcieThroughput"}
    )
    api = fake_node(1, unsupported=unsupported)
    snap = NvmlSampler(api, "n0").sample()
    g = snap.gpus[0]
    assert g.error is None
    assert g.power_mw is None and g.power_limit_mw == 400_000
    assert g.ecc_corrected_errors is None and g.ecc_uncorrected_errors is None
    assert g.pcie_tx_bytes_per_s is None and g.pcie_rx_bytes_per_s is None
    assert g.util_percent is not None


def test_memory_v1_when_v2_is_refused() -> None:
    class OldDriver(FakeNvml):
        def nvmlDeviceGetMemoryInfo(self, handle: int, version: object = None) -> object:
            if version:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
            return super().nvmlDeviceGetMemoryInfo(handle)

    sampler = NvmlSampler(OldDriver([FakeGpu()]), "n0")
    for _ in range(2):
        g = sampler.sample().gpus[0]
        assert g.memory_reserved_bytes is None and g.memory_total_bytes == A800_MEMORY_BYTES
    assert sampler._memory_v2 is False  # asked once, then remembered


def test_a_lost_gpu_is_marked_and_the_others_still_read() -> None:
    api = fake_node(3)
    api.gpus[1].lost = True
    snap = NvmlSampler(api, "n0").sample()
    assert [g.error for g in snap.gpus] == [None, "GPU is lost", None]
    assert snap.gpus[1].util_percent is None and snap.gpus[2].util_percent is not None


def test_pcie_is_read_on_its_own_slower_cadence() -> None:
    clock = Clock()
    api = fake_node(2, clock=clock)
    sampler = NvmlSampler(api, "n0", clock=clock, pcie_every_s=5.0)
    values = []
    for _ in range(10):
        values.append(sampler.sample().gpus[0].pcie_tx_bytes_per_s)
        clock.t += 1.0
    # 2 counters × 2 GPUs at t = 0 and t = 5 only
    assert api.calls["nvmlDeviceGetPcieThroughput"] == 8
    assert api.calls["nvmlDeviceGetUtilizationRates"] == 20
    assert all(v is not None for v in values)  # the last value is kept in between


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no NVIDIA GPU here"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "no NVIDIA GPU here"),
        (pynvml.NVML_ERROR_UNKNOWN, "NVML could not start"),
    ],
)
def test_no_driver_gives_a_message_not_a_crash(code: int, text: str) -> None:
    clock = Clock()
    api = FakeNvml([FakeGpu()], init_error=code)
    sampler = NvmlSampler(api, "n0", clock=clock)
    snap = sampler.sample()
    assert snap.gpus == () and snap.error is not None and text in snap.error
    api.init_error = None  # the driver appears later: retried after INIT_RETRY_S, not each poll
    assert sampler.sample().gpus == ()
    clock.t += 61
    assert len(sampler.sample().gpus) == 1


def test_zero_devices_says_so() -> None:
    snap = NvmlSampler(FakeNvml([]), "n0").sample()
    assert snap.gpus == () and snap.error is not None and "0 devices" in snap.error


def test_real_nvml_here() -> None:
    """The real pynvml through the same sampler: on a machine without a driver it reports
    "no NVIDIA GPU here"; with one, real GPUs."""
    source = LocalGpuSource(node="here")
    items = source.poll()
    source.close()
    gpu = next(i for i in items if isinstance(i, GpuSnapshot))
    host = next(i for i in items if isinstance(i, HostSnapshot))
    assert host.memory_total_bytes is not None and host.memory_total_bytes > 0
    if gpu.error is not None:
        assert "no NVIDIA GPU here" in gpu.error and gpu.gpus == ()
    else:
        assert gpu.gpus and all(g.memory_total_bytes for g in gpu.gpus)


def test_fake_cluster_source_shape() -> None:
    items = FakeClusterSource(3, 8).poll()
    gpus = [i for i in items if isinstance(i, GpuSnapshot)]
    assert [g.node for g in gpus] == ["node00", "node01", "node02"]
    assert all(len(g.gpus) == 8 for g in gpus)
    assert sum(isinstance(i, HostSnapshot) for i in items) == 3
