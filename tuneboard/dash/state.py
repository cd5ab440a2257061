"""The dashboard's state: snapshots folded in, on the UI thread only. No textual here.

Workers never touch this: they post immutable snapshots, and `DashState.apply` (called
by the app on its own thread) folds them in. Each part keeps a `version` that goes up
when it changes, so a widget redraws only what changed since it last looked.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from planner.gpus import gpu_from_nvml_name
from tuneboard.sources.snapshots import (
    GpuSample,
    GpuSnapshot,
    HostSnapshot,
    JobInfo,
    LogSnapshot,
    MetricsSnapshot,
    Snapshot,
    SourceStatus,
    StatusSnapshot,
    StepMetrics,
)

HISTORY_LEN = 120
LOG_LINES_PER_NODE = 2000
EMA_BETA = 0.9


@dataclass
class DashGpu:
    sample: GpuSample
    util_history: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_LEN))


@dataclass
class DashNode:
    name: str
    gpus: dict[int, DashGpu] = field(default_factory=dict)
    host: HostSnapshot | None = None
    driver_version: str | None = None
    nvml_error: str | None = None
    last_seen_s: float | None = None
    #: Typical seconds between two GPU snapshots of this node (EMA), for staleness.
    gap_s: float | None = None
    connected: bool | None = None
    message: str | None = None
    util_history: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_LEN))
    version: int = 0

    def silent_for(self, now: float) -> float | None:
        return None if self.last_seen_s is None else max(0.0, now - self.last_seen_s)


@dataclass
class DashJob:
    steps: list[StepMetrics] = field(default_factory=list)
    loss_ema: list[float | None] = field(default_factory=list)
    #: When (snapshot time) the latest new step arrived: stalls are measured from it.
    last_step_at_s: float | None = None
    status: StatusSnapshot | None = None
    info: JobInfo | None = None
    bad_lines: int = 0
    version: int = 0
    _ema: float | None = None

    @property
    def last(self) -> StepMetrics | None:
        return self.steps[-1] if self.steps else None

    def add(self, record: StepMetrics, time_s: float) -> None:
        if self.steps and record.step <= self.steps[-1].step:
            if record.step < self.steps[-1].step:  # a restart from an earlier step
                cut = next(i for i, r in enumerate(self.steps) if r.step >= record.step)
                del self.steps[cut:]
                del self.loss_ema[cut:]
                self._ema = self.loss_ema[-1] if self.loss_ema else None
            else:  # the same step logged again: replace it
                self.steps.pop()
                self.loss_ema.pop()
                self._ema = self.loss_ema[-1] if self.loss_ema else None
        self.steps.append(record)
        loss = record.loss
        if loss is not None and math.isfinite(loss):
            # seeded with the first loss (not 0), so no debiasing is needed
            self._ema = loss if self._ema is None else EMA_BETA * self._ema + (1 - EMA_BETA) * loss
        self.loss_ema.append(self._ema)
        self.last_step_at_s = time_s


@dataclass
class DashLogs:
    lines: dict[str, deque[str]] = field(default_factory=dict)
    version: int = 0
    #: Lines received so far, all nodes (a view appends the ones it has not shown).
    total: int = 0
    #: Lines in arrival order across nodes, (node, line), for the "all nodes" view.
    merged: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=4000))


class DashState:
    def __init__(self) -> None:
        self.nodes: dict[str, DashNode] = {}
        self.job = DashJob()
        self.logs = DashLogs()
        self.sources: dict[str, SourceStatus] = {}
        self.version = 0
        self.nodes_version = 0  # a node was added or removed
        self._peak_cache: dict[tuple[str, int], float | None] = {}

    # -- folding snapshots in ---------------------------------------------------------
    def apply(self, items: Iterable[Snapshot]) -> None:
        for item in items:
            if isinstance(item, GpuSnapshot):
                self._gpus(item)
            elif isinstance(item, HostSnapshot):
                node = self._node(item.node)
                node.host = item
                self._seen(node, item.time_s, gpu=False)
            elif isinstance(item, MetricsSnapshot):
                for record in item.records:
                    self.job.add(record, item.time_s)
                self.job.bad_lines += item.bad_lines
                self.job.version += 1
            elif isinstance(item, StatusSnapshot):
                self.job.status = item
                self.job.version += 1
            elif isinstance(item, LogSnapshot):
                self._logs(item)
            elif isinstance(item, JobInfo):
                self.job.info = item
                self.job.version += 1
            elif isinstance(item, SourceStatus):
                self._source(item)
            self.version += 1

    def _node(self, name: str) -> DashNode:
        node = self.nodes.get(name)
        if node is None:
            node = self.nodes[name] = DashNode(name)
            self.nodes = dict(sorted(self.nodes.items()))
            self.nodes_version += 1
        return node

    def _seen(self, node: DashNode, time_s: float, *, gpu: bool) -> None:
        if gpu and node.last_seen_s is not None and time_s > node.last_seen_s:
            gap = time_s - node.last_seen_s
            node.gap_s = gap if node.gap_s is None else 0.8 * node.gap_s + 0.2 * min(gap, 60.0)
        if node.last_seen_s is None or time_s > node.last_seen_s:
            node.last_seen_s = time_s
        node.connected = True if node.connected is None else node.connected
        node.version += 1

    def _gpus(self, snap: GpuSnapshot) -> None:
        node = self._node(snap.node)
        node.nvml_error = snap.error
        node.driver_version = snap.driver_version
        if len(snap.gpus) != len(node.gpus):
            self.nodes_version += 1
        seen = set()
        for sample in snap.gpus:
            seen.add(sample.index)
            gpu = node.gpus.get(sample.index)
            if gpu is None:
                gpu = node.gpus[sample.index] = DashGpu(sample)
            gpu.sample = sample
            gpu.util_history.append(sample.util_percent)
        for index in [i for i in node.gpus if i not in seen]:
            del node.gpus[index]
        utils = [g.sample.util_percent for g in node.gpus.values()]
        known = [u for u in utils if u is not None]
        node.util_history.append(sum(known) / len(known) if known else None)
        self._seen(node, snap.time_s, gpu=True)

    def _logs(self, snap: LogSnapshot) -> None:
        buf = self.logs.lines.get(snap.node)
        if buf is None:
            buf = self.logs.lines[snap.node] = deque(maxlen=LOG_LINES_PER_NODE)
        buf.extend(snap.lines)
        self.logs.merged.extend((snap.node, line) for line in snap.lines)
        self.logs.total += len(snap.lines)
        self.logs.version += 1

    def _source(self, status: SourceStatus) -> None:
        self.sources[status.source] = status
        if status.node is not None:
            node = self._node(status.node)
            node.connected = status.connected
            node.message = status.message
            node.version += 1

    # -- derived figures ----------------------------------------------------------------
    def gpu_count(self) -> int:
        return sum(len(n.gpus) for n in self.nodes.values())

    def peak_flops_per_gpu(self, sample: GpuSample) -> float | None:
        """Dense bf16 peak of this GPU from the planner's catalog (None if unknown)."""
        if sample.name is None or not sample.memory_total_bytes:
            return None
        key = (sample.name, sample.memory_total_bytes)
        if key not in self._peak_cache:
            spec = gpu_from_nvml_name(sample.name, sample.memory_total_bytes)
            tflops = None if spec is None else (spec.bf16_tflops or spec.fp16_tflops)
            self._peak_cache[key] = None if tflops is None else tflops * 1e12
        return self._peak_cache[key]

    def mfu(self) -> float | None:
        """Model FLOPs utilisation of the latest step: tokens/s × model FLOPs per token over
        the job's GPUs × their dense bf16 peak. None unless the model, the job's GPU count
        (from its recipe) and the GPU type (from a sample) are all known."""
        last, info = self.job.last, self.job.info
        if last is None or info is None or info.flops_per_token is None or not info.gpus:
            return None
        if last.tokens_per_s is None:
            return None
        first_gpu = next((g.sample for n in self.nodes.values() for g in n.gpus.values()), None)
        peak = None if first_gpu is None else self.peak_flops_per_gpu(first_gpu)
        if peak is None:
            return None
        return last.tokens_per_s * info.flops_per_token / (info.gpus * peak)
