"""The dashboard app: pollers feed snapshots in, the visible screen redraws from the state.

Data path: each source's `Poller` thread polls it (never overlapping itself), writes what
it saw to the recorder if any, and posts a `SourceBatch`. The app, on its own thread,
folds the batch into `DashState` and schedules one redraw a moment later (so a burst of
batches paints once). A 1 s tick redraws too, for ages and staleness. Only the screen
on show is redrawn, inside `batch_update()`, and widgets skip what did not change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from tuneboard.dash.alerts import Alert, compute_alerts
from tuneboard.dash.base_screen import DashScreen
from tuneboard.dash.cluster_screen import ClusterScreen
from tuneboard.dash.config import DashConfig
from tuneboard.dash.job_screen import JobScreen
from tuneboard.dash.messages import SourceBatch
from tuneboard.dash.modals import HelpScreen
from tuneboard.dash.plan_screen import PlanScreen
from tuneboard.dash.state import DashState
from tuneboard.sources.base import Poller
from tuneboard.sources.record import Recorder
from tuneboard.sources.snapshots import GpuSnapshot, MetricsSnapshot, Snapshot

#: Delay between a batch arriving and the redraw it triggers: batches from several
#: sources that land within it paint once.
COALESCE_S = 0.02


class DashboardApp(App[None]):
    TITLE = "tuneboard"
    CSS_PATH = "dashboard.tcss"
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012 - textual's API
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "cluster": ClusterScreen,
        "job": JobScreen,
        "plan": PlanScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "show('cluster')", "Cluster"),
        Binding("2", "show('job')", "Job"),
        Binding("3", "show('plan')", "Plan"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, config: DashConfig | None = None) -> None:
        super().__init__()
        self.config = config or DashConfig()
        self.state = DashState()
        self.state.apply(self.config.initial)
        self.alerts: list[Alert] = []
        self.pollers: list[Poller] = []
        self.recorder: Recorder | None = None
        self.redraws = 0
        self.latencies_s: list[float] = []
        self._redraw_pending = False
        self._pending_samples: list[float] = []

    # -- lifecycle -----------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.config.record is not None:
            self.recorder = Recorder(self.config.record)
        for source in self.config.sources:
            self.pollers.append(Poller(source, self._deliver).start())
        self.set_interval(1.0, self._tick)
        self.switch_mode(self.config.start_mode)

    def on_unmount(self) -> None:
        for poller in self.pollers:
            poller.stop(timeout_s=0.5)
        if self.recorder is not None:
            self.recorder.close()
        self._write_stats()

    def _deliver(self, source: str, items: Sequence[Snapshot], took_s: float) -> None:
        """Poller thread: record, then hand over to the app's thread."""
        if self.recorder is not None:
            self.recorder.write(source, items)
        if items:
            self.post_message(SourceBatch(source, items, took_s))

    # -- data in ------------------------------------------------------------------------
    def on_source_batch(self, message: SourceBatch) -> None:
        self.ingest(message.items)

    def ingest(self, items: Sequence[Snapshot]) -> None:
        """Fold snapshots into the state and schedule a redraw (UI thread only)."""
        self.state.apply(items)
        for item in items:
            if isinstance(item, (GpuSnapshot, MetricsSnapshot)):
                self._pending_samples.append(item.time_s)
        if not self._redraw_pending:
            self._redraw_pending = True
            self.set_timer(COALESCE_S, self.refresh_now)

    # -- drawing --------------------------------------------------------------------------
    def _tick(self) -> None:
        self.refresh_now()
        if self.config.stats_path is not None:
            self._write_stats()

    def refresh_now(self) -> None:
        self._redraw_pending = False
        if not self.screen_stack:  # between start and the first screen
            return
        screen = self.screen
        if not isinstance(screen, DashScreen) or not screen.composed:
            return
        now = self.config.clock()
        self.alerts = compute_alerts(self.state, now, self.config.thresholds)
        with self.batch_update():
            screen.update_view(self.state, self.alerts, now)
        self.redraws += 1
        if self._pending_samples:
            samples, self._pending_samples = self._pending_samples, []
            self.call_after_refresh(self._painted, samples)

    def _painted(self, sample_times: list[float]) -> None:
        """After the frame with these samples was written: sample-to-screen latency."""
        now = time.time()
        self.latencies_s.extend(now - t for t in sample_times)
        if len(self.latencies_s) > 10_000:
            del self.latencies_s[:5_000]

    def _write_stats(self) -> None:
        path: Path | None = self.config.stats_path
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(
            json.dumps({"latencies_s": self.latencies_s, "redraws": self.redraws}),
            encoding="utf-8",
        )
        tmp.replace(path)

    # -- actions ------------------------------------------------------------------------
    def action_show(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())
