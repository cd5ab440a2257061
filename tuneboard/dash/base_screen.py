"""What every dashboard screen shares: the top bar, the footer, and `update_view`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.visual import VisualType
from textual.widgets import Footer, Static

from tuneboard.dash.alerts import Alert
from tuneboard.dash.state import DashState

if TYPE_CHECKING:
    from tuneboard.dash.app import DashboardApp

TABS = (("cluster", "1 Cluster"), ("job", "2 Job"), ("plan", "3 Plan"))


class TopBar(Static):
    """`tuneboard  1 Cluster  2 Job  3 Plan    replay ×10 · 3 nodes · 24 GPUs · 2 alerts 12:03`"""

    def __init__(self, mode: str) -> None:
        super().__init__(id="topbar")
        self.mode = mode
        self._shown: Text | None = None

    def show(self, state: DashState, alerts: list[Alert], now: float, label: str) -> None:
        width = self.size.width or 120
        tabs = Text()
        for mode, title in TABS:
            tabs.append(f" {title} ", style="reverse bold" if mode == self.mode else "dim")
        nodes, gpus = len(state.nodes), state.gpu_count()
        counts = Text(
            f"{nodes} node{'' if nodes == 1 else 's'} · {gpus} GPU{'' if gpus == 1 else 's'}"
        )
        if alerts:
            errors = sum(a.level == "error" for a in alerts)
            counts.append(" · ")
            counts.append(
                f"{len(alerts)} alert{'s' if len(alerts) > 1 else ''}",
                style="bold red" if errors else "bold yellow",
            )
        clock = Text(" " + time.strftime("%H:%M:%S", time.localtime(now)), style="dim")
        brand = Text("tuneboard ", style="bold")
        label_text = Text(f"{label} · ", style="dim") if label else Text()
        # drop the least useful pieces first when the terminal is narrow
        for with_brand, with_label, with_clock in (
            (True, True, True),
            (True, True, False),
            (False, True, False),
            (False, False, False),
        ):
            left = Text.assemble(brand if with_brand else "", tabs)
            right = Text.assemble(label_text if with_label else "", counts)
            if with_clock:
                right.append_text(clock)
            if left.cell_len + right.cell_len + 1 <= width:
                break
        text = left + Text(" " * max(1, width - left.cell_len - right.cell_len)) + right
        if text != self._shown:
            self._shown = text
            self.update(text)


class Cached(Static):
    """A Static that repaints only when its content really changed."""

    _last: VisualType | None = None

    def show(self, content: VisualType) -> None:
        if content != self._last:
            self._last = content
            self.update(content)


class DashScreen(Screen[None]):
    MODE = ""
    #: Set once the screen's widgets exist (Textual calls every class's on_mount).
    composed = False

    def on_mount(self) -> None:
        self.composed = True

    def compose_top(self) -> ComposeResult:
        yield TopBar(self.MODE)

    def compose_footer(self) -> ComposeResult:
        yield Footer(compact=True)

    @property
    def dash(self) -> DashboardApp:
        # A cast, not an isinstance: importing the app here would close an import cycle
        # (the app imports every screen); every DashScreen is pushed by DashboardApp.
        return cast("DashboardApp", self.app)

    def update_view(self, state: DashState, alerts: list[Alert], now: float) -> None:
        """Redraw from the state; called by the app on its thread while this screen shows."""
        self.query_one(TopBar).show(state, alerts, now, self.dash.config.label)

    def on_screen_resume(self) -> None:
        self.dash.refresh_now()
