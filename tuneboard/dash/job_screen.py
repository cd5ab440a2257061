"""Screen 2, Job: loss (raw and EMA), lr, grad norm, tokens/s, progress, alerts, logs."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from tuneboard.dash.alerts import Alert
from tuneboard.dash.base_screen import Cached, DashScreen
from tuneboard.dash.job_text import alerts_text, job_header, job_stats
from tuneboard.dash.log_view import LogView
from tuneboard.dash.loss_plot import LossPlot
from tuneboard.dash.modals import ConfirmScreen
from tuneboard.dash.state import DashState


class JobScreen(DashScreen):
    MODE = "job"
    AUTO_FOCUS = "#log"  # arrows scroll the log; the node picker is not focused by accident
    BINDINGS: ClassVar[list[BindingType]] = [
        # priority: handled as it arrives, before the keys after it are routed (over a slow
        # link "/" and the filter text come in one read); in the field it types a "/"
        Binding("slash", "filter", "Filter logs", priority=True),
        Binding("x", "stop", "Stop job"),
        Binding("escape", "unfocus", "Leave field", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield from self.compose_top()
        yield Cached(id="job-header")
        yield Cached(id="job-stats")
        yield Cached(id="alerts")
        yield LossPlot(id="loss-plot")
        yield LogView(id="logs")
        yield from self.compose_footer()

    def update_view(self, state: DashState, alerts: list[Alert], now: float) -> None:
        super().update_view(state, alerts, now)
        self.query_one("#job-header", Cached).show(job_header(state))
        self.query_one("#job-stats", Cached).show(job_stats(state, self.size.width))
        box = self.query_one("#alerts", Cached)
        box.show(alerts_text(alerts, limit=3 if self.size.height >= 30 else 2))
        box.display = bool(alerts)
        self.query_one(LossPlot).show(state.job)
        self.query_one(LogView).show(state.logs)

    def action_filter(self) -> None:
        logs = self.query_one(LogView)
        if not logs.type_in_filter("/"):
            logs.focus_filter()

    def action_unfocus(self) -> None:
        self.set_focus(None)

    def action_stop(self) -> None:
        stop = self.dash.config.stop_job
        if stop is None:
            self.notify(
                "No launcher job here (watching files or a replay): nothing to stop.",
                severity="warning",
            )
            return
        info = self.dash.state.job.info
        name = info.name if info and info.name else "the job"

        def answered(yes: bool | None) -> None:
            if yes:
                self._stop_job()

        self.app.push_screen(ConfirmScreen(f"Stop {name} on every node?"), answered)

    @work(thread=True, exclusive=True, group="stop-job")
    def _stop_job(self) -> None:
        stop = self.dash.config.stop_job
        assert stop is not None
        try:
            message = stop()
        except Exception as exc:  # noqa: BLE001 - the launcher's failure is shown, not fatal
            text = f"stop failed: {type(exc).__name__}: {exc}"
            self.app.call_from_thread(self.notify, text, severity="error", timeout=30)
            return
        self.app.call_from_thread(self.notify, message)
