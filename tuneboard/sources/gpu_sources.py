"""GPU sources: this machine through NVML, or a fake cluster of fake-NVML nodes."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence

from tuneboard.sources.fake_nvml import fake_node
from tuneboard.sources.host_sampler import HostSampler
from tuneboard.sources.nvml_api import NvmlApi, real_nvml
from tuneboard.sources.nvml_sampler import NvmlSampler
from tuneboard.sources.snapshots import HostSnapshot, Snapshot


class LocalGpuSource:
    """This machine: every GPU through NVML (real or given), plus CPU and RAM from /proc."""

    def __init__(
        self,
        *,
        api: NvmlApi | None = None,
        node: str | None = None,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node or socket.gethostname()
        self._interval_s = interval_s
        self.sampler = NvmlSampler(api or real_nvml(), self.node, clock=clock)
        self.host = HostSampler(self.node, clock=clock)

    @property
    def name(self) -> str:
        return f"nvml:{self.node}"

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def poll(self) -> Sequence[Snapshot]:
        return (self.sampler.sample(), self.host.sample())

    def close(self) -> None:
        self.sampler.close()


class FakeClusterSource:
    """`nodes` × `gpus_per_node` fake A800s, each node sampled by a real `NvmlSampler`.

    For demos and benchmarks on machines without GPUs (`--fake-gpus 3x8`). Host figures
    are synthetic (a training node: busy dataloader CPUs, ~40 % of 1 TiB RAM).
    """

    def __init__(
        self,
        nodes: int,
        gpus_per_node: int,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        node_prefix: str = "node",
    ) -> None:
        width = max(2, len(str(nodes - 1)))
        self._clock = clock
        self._interval_s = interval_s
        self.samplers = [
            NvmlSampler(
                fake_node(gpus_per_node, seed=n, clock=clock),
                f"{node_prefix}{n:0{width}d}",
                clock=clock,
                name_of_pid=lambda pid: "python",
            )
            for n in range(nodes)
        ]

    @property
    def name(self) -> str:
        return "fake-nvml"

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def poll(self) -> Sequence[Snapshot]:
        out: list[Snapshot] = []
        now = self._clock()
        for n, sampler in enumerate(self.samplers):
            out.append(sampler.sample())
            out.append(
                HostSnapshot(
                    node=sampler.node,
                    time_s=now,
                    cpu_percent=35.0 + 10.0 * ((now / 5 + n) % 1.0),
                    cpu_count=128,
                    memory_used_bytes=(400 + 7 * n % 50) << 30,
                    memory_total_bytes=1024 << 30,
                    load_1m=40.0,
                )
            )
        return out

    def close(self) -> None:
        for sampler in self.samplers:
            sampler.close()
