"""The per-node log tail with a node picker and a text filter."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Log, Select

from tuneboard.dash.state import DashLogs

ALL = "__all__"


def log_line(node: str, line: str, *, all_nodes: bool) -> str:
    """A line as the log view shows it: in the all-nodes view prefixed with its node,
    unless it already starts with `node/rank ` (the launcher's per-node logs do)."""
    if not all_nodes or line.startswith(f"{node}/"):
        return line
    return f"{node} │ {line}"


class LogView(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._node_names: tuple[str, ...] = ()
        self._seen_total = 0
        self._logs: DashLogs | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="log-controls"):
            yield Select[str](
                [("all nodes", ALL)], value=ALL, allow_blank=False, compact=True, id="log-node"
            )
            yield Input(placeholder="filter logs  ( / )", compact=True, id="log-filter")
        yield Log(max_lines=2000, id="log", auto_scroll=True)

    @property
    def node(self) -> str:
        value = self.query_one("#log-node", Select).value
        return value if isinstance(value, str) else ALL

    @property
    def filter_text(self) -> str:
        return self.query_one("#log-filter", Input).value.strip().lower()

    def _matches(self, node: str, line: str) -> bool:
        if self.node != ALL and node != self.node:
            return False
        f = self.filter_text
        return not f or f in line.lower() or f in node.lower()

    def _fmt(self, node: str, line: str) -> str:
        return log_line(node, line, all_nodes=self.node == ALL)

    def show(self, logs: DashLogs) -> None:
        """Append what arrived since the last call (or rebuild if the nodes changed)."""
        self._logs = logs
        nodes = tuple(sorted(logs.lines))
        if nodes != self._node_names:
            self._node_names = nodes
            select = self.query_one("#log-node", Select)
            current = self.node
            select.set_options([("all nodes", ALL), *((n, n) for n in nodes)])
            select.value = current if current == ALL or current in nodes else ALL
        new = logs.total - self._seen_total
        if new <= 0:
            return
        self._seen_total = logs.total
        recent = list(logs.merged)[-min(new, len(logs.merged)) :]
        lines = [self._fmt(n, line) for n, line in recent if self._matches(n, line)]
        if lines:
            self.query_one(Log).write_lines(lines)

    def rebuild(self) -> None:
        log = self.query_one(Log)
        log.clear()
        if self._logs is None:
            return
        lines = [self._fmt(n, line) for n, line in self._logs.merged if self._matches(n, line)]
        log.write_lines(lines[-2000:])
        self._seen_total = self._logs.total

    def on_select_changed(self, event: Select.Changed) -> None:
        self.rebuild()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "log-filter":
            self.rebuild()

    def type_in_filter(self, text: str) -> bool:
        """Insert text at the filter's cursor if the filter has focus; False if not."""
        field = self.query_one("#log-filter", Input)
        if not field.has_focus:
            return False
        field.insert_text_at_cursor(text)
        return True

    def focus_filter(self) -> None:
        """Focus the filter now, not on the next idle (``Widget.focus`` defers): keys typed
        right after ``/`` must land in the field, not in whatever had focus before."""
        self.screen.set_focus(self.query_one("#log-filter", Input))
