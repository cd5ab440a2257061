"""Everything the dashboard app is started with. Plain data, no textual."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tuneboard.dash.alerts import Thresholds
from tuneboard.sources.base import Source
from tuneboard.sources.snapshots import Snapshot

#: Stops the running job on every node; returns a line to show the user. Provided by the
#: launcher when the dashboard watches a job it started; None: there is nothing to stop.
StopJob = Callable[[], str]


@dataclass
class DashConfig:
    sources: Sequence[Source] = ()
    #: The dashboard's "now" for ages and staleness: wall clock, or a replay's clock.
    clock: Callable[[], float] = time.time
    interval_s: float = 1.0
    record: Path | None = None
    stop_job: StopJob | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    #: Snapshots applied before the first frame (tests and snapshot images).
    initial: Sequence[Snapshot] = ()
    #: Where sample-to-screen latencies are written (benchmarks/dashboard_cpu.py).
    stats_path: Path | None = None
    #: Shown in the top bar: "replay ×10", "fake GPUs", the job directory.
    label: str = ""
    start_mode: str = "cluster"
    #: Force the compact cluster layout (one row per node); None: by size.
    compact: bool | None = None
