"""`tuneboard agent`: the node-side sampler the dashboard reads over SSH.

Every `interval_s` it prints one JSON line (tuneboard/sources/agent_stream.py) holding
this node's GPUs (NVML, or fake GPUs), its CPU and RAM (/proc), and the new lines of the
job's metrics, status and logs. It holds no state beyond file offsets, exits quietly when
its stdout closes (the SSH session ended), and never imports textual.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from tuneboard.sources.agent_stream import agent_line
from tuneboard.sources.base import Source
from tuneboard.sources.fake_nvml import fake_node
from tuneboard.sources.filetail import FileTail
from tuneboard.sources.host_sampler import HostSampler
from tuneboard.sources.job_dir import LOG_TAIL_BYTES, JobDirSource, metrics_snapshot
from tuneboard.sources.nvml_api import NvmlApi, real_nvml
from tuneboard.sources.nvml_sampler import NvmlSampler
from tuneboard.sources.snapshots import LogSnapshot, Snapshot


@dataclass
class AgentOptions:
    interval_s: float = 1.0
    node: str | None = None
    job_dir: Path | None = None
    metrics: Path | None = None
    logs: list[Path] = field(default_factory=list)
    fake_gpus: int | None = None
    count: int | None = None


class _Files:
    """Explicit --metrics and --log files."""

    def __init__(self, node: str, metrics: Path | None, logs: Sequence[Path]) -> None:
        self.node = node
        self.metrics = FileTail(metrics) if metrics else None
        self.logs = [FileTail(p, tail_bytes=LOG_TAIL_BYTES) for p in logs]

    def read(self, now: float) -> list[Snapshot]:
        out: list[Snapshot] = []
        if self.metrics is not None:
            metrics = metrics_snapshot(self.metrics.read_lines(), now)
            if metrics is not None:
                out.append(metrics)
        for tail in self.logs:
            lines = tail.read_lines()
            if lines:
                out.append(LogSnapshot(f"{self.node}/{tail.path.stem}", now, tuple(lines)))
        return out


class _Stop(Exception):
    pass


def run_agent(
    options: AgentOptions,
    out: TextIO = sys.stdout,
    *,
    api: NvmlApi | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Sample until stdout closes, a signal arrives, or `count` lines are written."""
    node = options.node or socket.gethostname()
    if api is None:
        api = fake_node(options.fake_gpus) if options.fake_gpus is not None else real_nvml()
    gpus = NvmlSampler(api, node, clock=clock)
    host = HostSampler(node, clock=clock)
    job: Source | None = (
        JobDirSource(options.job_dir, clock=clock) if options.job_dir is not None else None
    )
    files = _Files(node, options.metrics, options.logs)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)
    written = 0
    next_at = time.monotonic()
    try:
        while options.count is None or written < options.count:
            now = clock()
            snapshots: list[Snapshot] = [gpus.sample(), host.sample()]
            if job is not None:
                snapshots.extend(job.poll())
            snapshots.extend(files.read(now))
            out.write(agent_line(node, now, snapshots) + "\n")
            out.flush()
            written += 1
            next_at += options.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a slow NVML call): skip ahead, do not burst
                next_at = time.monotonic()
            elif options.count is None or written < options.count:
                sleep(delay)
    except BrokenPipeError:
        # the reader went away (the SSH session closed): exit quietly, and keep Python's
        # own flush at exit from hitting the closed pipe again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        gpus.close()
        if job is not None:
            job.close()
    return 0
