"""The loss curve: raw loss as a dim band, its EMA as a bright line, axis labels left."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from tuneboard.dash import format as fmt
from tuneboard.dash.braille import Series, plot, value_range
from tuneboard.dash.state import DashJob

AXIS_WIDTH = 8


class LossPlot(Widget):
    DEFAULT_CSS = """
    LossPlot { height: 8; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._job: DashJob | None = None
        self._key: tuple[int, int, int] | None = None
        self._text = Text()
        self.renders = 0

    def show(self, job: DashJob) -> None:
        key = (job.version, self.size.width, self.size.height)
        self._job = job
        if key != self._key:
            self._key = key
            self._text = self._build(job)
            self.refresh()

    def on_resize(self) -> None:
        if self._job is not None:
            self.show(self._job)

    def _build(self, job: DashJob) -> Text:
        self.renders += 1
        width = max(1, self.size.width - AXIS_WIDTH)
        height = max(2, self.size.height - 1)
        raw = [r.loss for r in job.steps]
        series = [Series(raw, "bright_black"), Series(job.loss_ema, "bold cyan")]
        y = value_range(series)
        if y is None:
            return Text("no loss yet", style="dim")
        lines = plot(series, width, height, y)
        out = Text()
        for i, line in enumerate(lines):
            if i == 0:
                label = fmt.number(y[1], ".3g")
            elif i == len(lines) - 1:
                label = fmt.number(y[0], ".3g")
            elif i == len(lines) // 2:
                label = fmt.number((y[0] + y[1]) / 2, ".3g")
            else:
                label = ""
            out.append(label.rjust(AXIS_WIDTH - 1) + "┤", style="dim")
            out.append_text(line)
            out.append("\n")
        first = job.steps[0].step if job.steps else 0
        last = job.steps[-1].step if job.steps else 0
        left = f"step {first}"
        right = f"{last}"
        out.append(" " * AXIS_WIDTH + left + right.rjust(max(1, width - len(left))), style="dim")
        return out

    def render(self) -> Text:
        return self._text
