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

  [b]1[/b] Cluster   every GPU of every node, grouped by node
  [b]2[/b] Job       loss, learning rate, tokens/s, ETA, alerts, logs
  [b]3[/b] Plan      the planner as a form; the table updates as you type
  [b]?[/b] this help        [b]q[/b] quit        [b]tab[/b] / [b]shift+tab[/b] move focus
  [b]escape[/b] leave a text field (then 1 2 3 q work again)

Cluster   [b]c[/b] compact layout (one row per node) / detailed (one row per GPU)
          [b]↑ ↓ PgUp PgDn[/b] move; the panel below shows the row's details
          ● green: reporting · yellow: stale (silent for 3 sampling intervals)
          · red: lost (silent 60 s, or its agent stream ended)
Job       [b]/[/b] filter the logs      [b]x[/b] stop the job (asks first)
          loss: grey = every step, cyan = EMA (β 0.9)
          alerts: NaN loss · stall (no step for 5 min, GPUs under 30 % of power
          limit) · GPU memory ≥ 97 % · node stale or lost · ECC errors
Plan      [b]ctrl+s[/b] save the recommendation as a recipe (tuneboard launch FILE)
          an HF id (org/name) is fetched when you press [b]enter[/b] in Model

"–" means the value is not available (not supported by that GPU or not logged).
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
