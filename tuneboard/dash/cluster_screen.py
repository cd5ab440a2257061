"""Screen 1, Cluster: every GPU of every node, grouped by node, with node health."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from tuneboard.dash import format as fmt
from tuneboard.dash.alerts import Alert, Thresholds
from tuneboard.dash.base_screen import Cached, DashScreen
from tuneboard.dash.cluster_rows import (
    NODE_WIDTH,
    Health,
    compact_columns,
    detailed_columns,
    gpu_details,
    health_of,
    node_row_compact,
    node_rows_detailed,
    node_width,
)
from tuneboard.dash.keyed_table import KeyedTable
from tuneboard.dash.state import DashNode, DashState
from tuneboard.dash.table_model import Column, Row

#: Above this many GPUs the compact layout (one row per node) is the default.
COMPACT_ABOVE_GPUS = 64
_DETAILED_FIXED = 16 + 9 + 9 + 5 + 9 + 6 + 7 * 2 + 2
_COMPACT_FIXED = 12 + 4 + 10 + 5 + 9 + 4 + 8 * 2 + 2


class ClusterScreen(DashScreen):
    MODE = "cluster"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "toggle_compact", "Compact")]

    def __init__(self) -> None:
        super().__init__()
        self.compact_override: bool | None = None
        self._cache: dict[str, tuple[tuple[object, ...], list[Row]]] = {}
        self._state: DashState | None = None
        self._now = 0.0

    def compose(self) -> ComposeResult:
        yield from self.compose_top()
        yield Cached(id="cluster-summary")
        yield KeyedTable(id="gpu-table")
        yield Cached(id="details")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self.compact_override = self.dash.config.compact

    def is_compact(self, state: DashState) -> bool:
        if self.compact_override is not None:
            return self.compact_override
        return state.gpu_count() > COMPACT_ABOVE_GPUS

    def action_toggle_compact(self) -> None:
        state = self.dash.state
        self.compact_override = not self.is_compact(state)
        self._cache.clear()
        self.dash.refresh_now()

    def _history_width(self, compact: bool, gpus_per_node: int, name_width: int) -> int:
        width = self.size.width or 120
        names = name_width - NODE_WIDTH  # beyond the default node column
        fixed = _COMPACT_FIXED + max(4, gpus_per_node) + names if compact else _DETAILED_FIXED
        return max(6, min(40, width - fixed))

    def update_view(self, state: DashState, alerts: list[Alert], now: float) -> None:
        super().update_view(state, alerts, now)
        self._state, self._now = state, now
        t = self.dash.config.thresholds
        compact = self.is_compact(state)
        per_node = max((len(n.gpus) for n in state.nodes.values()), default=8)
        name_width = node_width(state.nodes)
        width = self._history_width(compact, per_node, name_width)
        columns: list[Column] = (
            compact_columns(width, per_node, name_width) if compact else detailed_columns(width)
        )
        rows: list[Row] = []
        healths: dict[Health, int] = {"ok": 0, "stale": 0, "lost": 0}
        for node in state.nodes.values():
            health = health_of(node, now, t)
            healths[health] += 1
            rows.extend(self._node_rows(node, health, t, width, compact))
        self.query_one(KeyedTable).sync(columns, rows)
        self._summary(state, healths)
        self._details()

    def _node_rows(
        self, node: DashNode, health: Health, t: Thresholds, width: int, compact: bool
    ) -> list[Row]:
        key = (node.version, health, width, compact)
        cached = self._cache.get(node.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        rows = (
            [node_row_compact(node, health, t, width)]
            if compact
            else node_rows_detailed(node, health, t, width)
        )
        self._cache[node.name] = (key, rows)
        return rows

    def _summary(self, state: DashState, healths: dict[Health, int]) -> None:
        text = Text()
        if not state.nodes:
            text.append("waiting for GPU data…", style="dim")
        elif all(n.nvml_error and not n.gpus for n in state.nodes.values()):
            first = next(iter(state.nodes.values()))
            text.append(f"{first.nvml_error}", style="bold yellow")
            text.append(" · 2 Job and 3 Plan still work", style="dim")
        else:
            samples = [g.sample for n in state.nodes.values() for g in n.gpus.values()]
            used = sum(s.memory_used_bytes or 0 for s in samples)
            total = sum(s.memory_total_bytes or 0 for s in samples)
            n = len(state.nodes)
            text.append(f"{n} node{'' if n == 1 else 's'}", style="bold")
            text.append(f" · {len(samples)} GPUs · util ")
            text.append(fmt.percent(fmt.mean([s.util_percent for s in samples])), style="bold")
            text.append(" · memory ")
            text.append(f"{used / fmt.GIB / 1024:.1f}/{total / fmt.GIB / 1024:.1f} TiB")
            text.append(f" · power {sum(s.power_mw or 0 for s in samples) / 1e6:.1f} kW")
            styles: dict[Health, str] = {"stale": "yellow", "lost": "red"}
            for health, style in styles.items():
                if healths[health]:
                    text.append(f" · {healths[health]} {health}", style=f"bold {style}")
        self.query_one("#cluster-summary", Cached).show(text)

    def _details(self) -> None:
        state = self._state
        if state is None:
            return
        key = self.query_one(KeyedTable).key_at_cursor()
        text = ""
        if key is not None:
            parts = key.split(":")
            node = state.nodes.get(parts[1])
            if node is not None:
                index = int(parts[2]) if parts[0] == "g" else None
                text = gpu_details(node, index, self._now)
        self.query_one("#details", Cached).show(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._details()
