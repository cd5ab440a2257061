"""Modal screens: help, a yes/no confirmation, a file name prompt."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

HELP = """\
[b]tuneboard dashboard[/b] — keys (no mouse needed)

  [b]1[/b] Cluster  every GPU of every node, grouped by node
  [b]2[/b] Job      loss, learning rate, tokens/s, ETA, alerts, logs
  [b]3[/b] Plan     the planner as a form; the table follows as you type
  [b]?[/b] help  [b]q[/b] quit  [b]tab[/b]/[b]shift+tab[/b] focus  [b]escape[/b] leave a field

Cluster  [b]c[/b] compact (a row per node) / detailed (a row per GPU)
         [b]↑ ↓ PgUp PgDn[/b] move; the panel below details the row
         ● green reporting · yellow stale (3 intervals silent)
         · red lost (60 s silent, or its agent stream ended)
Job      [b]/[/b] filter the logs   [b]x[/b] stop the job (asks first)
         loss: grey every step, cyan EMA (β 0.9); alerts: NaN loss,
         stall (5 min, GPUs < 30 % power), GPU memory ≥ 97 %,
         node stale or lost, ECC errors
Plan     [b]ctrl+s[/b] save the recommendation as a recipe to launch;
         an HF id (org/name) is fetched on [b]enter[/b] in Model

"–": not available (the GPU does not report it, or it was not logged)
[dim]escape, q or ? closes this help[/dim]"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box", classes="modal-box"):
            yield Static(HELP, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box confirm-box"):
            yield Static(self.question, id="confirm-question")
            yield Static("[b]y[/b] yes    [b]n[/b] / [b]escape[/b] no", classes="modal-hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PathScreen(ModalScreen[str | None]):
    """Ask for a file name; enter accepts, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, prompt: str, default: str) -> None:
        super().__init__()
        self.prompt = prompt
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box confirm-box"):
            yield Static(self.prompt)
            yield Input(value=self.default, id="path-input")
            yield Static("[b]enter[/b] save    [b]escape[/b] cancel", classes="modal-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        self.dismiss(value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
