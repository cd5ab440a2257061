"""Screen 3, Plan: the planner as a form; the breakdown follows the form as you type.

Every change restarts a short debounce timer; when it fires, the plan is computed in a
thread worker (make_plan takes up to ~0.5 s) and only the newest result is shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical
from textual.timer import Timer
from textual.widgets import Input, Label, Select, Static

from planner.errors import PlannerInputError
from planner.setups import METHODS
from tuneboard.dash.alerts import Alert
from tuneboard.dash.base_screen import DashScreen
from tuneboard.dash.keyed_table import KeyedTable
from tuneboard.dash.plan_form import (
    AUTO,
    PlanForm,
    PlanOutcome,
    compute_plan,
    detected_gpus,
    plan_columns,
    plan_rows,
    plan_summary,
)
from tuneboard.dash.state import DashState

DEBOUNCE_S = 0.35
DEFAULT_MODEL = "llama-2-13b"


def _field(label: str, widget: Input | Select[str]) -> Vertical:
    return Vertical(Label(label), widget, classes="plan-field")


class PlanScreen(DashScreen):
    MODE = "plan"
    #: Arrive on the table, so 1 2 3 ? q work at once; tab or `e` goes into the form.
    AUTO_FOCUS = "#plan-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "edit", "Edit form"),
        Binding("ctrl+s", "save", "Save recipe"),
        Binding("escape", "unfocus", "Leave field", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._timer: Timer | None = None
        self._generation = 0
        self.outcome: PlanOutcome | None = None
        self._gpus_touched = False
        self.computations = 0

    def compose(self) -> ComposeResult:
        yield from self.compose_top()
        with Grid(id="plan-form"):
            yield _field("Model", Input(DEFAULT_MODEL, compact=True, id="plan-model"))
            yield _field("GPUs", Input(placeholder="e.g. 24xA800", compact=True, id="plan-gpus"))
            yield _field(
                "Method",
                Select[str](
                    [("auto", AUTO), *((m, m) for m in METHODS)],
                    value=AUTO,
                    allow_blank=False,
                    compact=True,
                    id="plan-method",
                ),
            )
            yield _field("Seq len", Input("2048", compact=True, id="plan-seq", restrict=r"\d*"))
            yield _field(
                "Micro-batch",
                Input(placeholder="auto", compact=True, id="plan-micro", restrict=r"\d*"),
            )
        yield Static(id="plan-summary")
        yield KeyedTable(id="plan-table")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        detected = detected_gpus(self.dash.state)
        if detected:
            self.query_one("#plan-gpus", Input).value = detected
        self.schedule()

    def update_view(self, state: DashState, alerts: list[Alert], now: float) -> None:
        super().update_view(state, alerts, now)
        gpus = self.query_one("#plan-gpus", Input)
        if not gpus.value and not self._gpus_touched:
            detected = detected_gpus(state)
            if detected:
                gpus.value = detected

    def form(self) -> PlanForm:
        method = self.query_one("#plan-method", Select).value
        return PlanForm(
            model=self.query_one("#plan-model", Input).value,
            gpus=self.query_one("#plan-gpus", Input).value,
            method=method if isinstance(method, str) else AUTO,
            seq_len=self.query_one("#plan-seq", Input).value,
            micro_batch=self.query_one("#plan-micro", Input).value,
        )

    def schedule(self, *, allow_network: bool = False) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._generation += 1
        generation = self._generation
        self._timer = self.set_timer(
            DEBOUNCE_S, lambda: self._compute(generation, self.form(), allow_network)
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "plan-gpus" and event.input.has_focus:
            self._gpus_touched = True
        self.schedule()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.schedule(allow_network=event.input.id == "plan-model")

    def on_select_changed(self, event: Select.Changed) -> None:
        self.schedule()

    @work(thread=True, exclusive=True, group="plan")
    def _compute(self, generation: int, form: PlanForm, allow_network: bool) -> None:
        try:
            outcome = compute_plan(form, allow_network=allow_network)
        except Exception as exc:  # noqa: BLE001 - a planner bug must not end the dashboard
            outcome = PlanOutcome(form, None, f"planner error: {type(exc).__name__}: {exc}")
        self.app.call_from_thread(self._show, generation, outcome)

    def _show(self, generation: int, outcome: PlanOutcome) -> None:
        if generation != self._generation:
            return  # the form changed since; a newer result is coming
        self.computations += 1
        self.outcome = outcome
        self.query_one("#plan-summary", Static).update(plan_summary(outcome))
        table = self.query_one("#plan-table", KeyedTable)
        wide = self.size.width >= 110
        with self.app.batch_update():
            if outcome.plan is None:
                table.sync(plan_columns(wide), [])
            else:
                table.sync(plan_columns(wide), plan_rows(outcome.plan, wide))

    def action_edit(self) -> None:
        self.query_one("#plan-model", Input).focus()

    def action_unfocus(self) -> None:
        self.set_focus(self.query_one("#plan-table"))

    def action_save(self) -> None:
        outcome = self.outcome
        if outcome is None or outcome.plan is None or outcome.plan.recommendation is None:
            self.notify("No recommendation to save yet.", severity="warning")
            return
        from tuneboard.dash.modals import PathScreen

        def chosen(path: str | None) -> None:
            if path and self.outcome is not None and self.outcome.plan is not None:
                self._save(self.outcome, Path(path))

        self.app.push_screen(
            PathScreen("Save the recommended setup as a recipe:", "recipe.yaml"), chosen
        )

    @work(thread=True, group="save")
    def _save(self, outcome: PlanOutcome, path: Path) -> None:
        from tuneboard.plan_recipe import write_recipe

        assert outcome.plan is not None
        try:
            written = write_recipe(outcome.plan, path)
        except PlannerInputError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(
            self.notify,
            f"Recipe written to {written}: set data.train, then tuneboard launch {written}",
        )
