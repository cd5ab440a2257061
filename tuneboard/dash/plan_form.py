"""The Plan screen's logic: form values -> a plan (run in a worker), plan -> table rows.

No textual here. Typing never touches the network: an HF id that is not in the catalog
is only fetched when the user presses enter in the model field (`allow_network`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from rich.text import Text

from planner.cluster_spec import build_cluster
from planner.errors import PlannerInputError
from planner.gpus import gpu_from_nvml_name
from planner.model_catalog import find_catalog_entry
from planner.models import resolve_model
from planner.search import Plan, make_plan
from planner.setups import METHODS, Constraints, Method
from tuneboard.dash import format as fmt
from tuneboard.dash.state import DashState
from tuneboard.dash.table_model import Column, Row

_HUB_ID = re.compile(r"[\w.\-]+/[\w.\-]+")
AUTO = "auto"


@dataclass(frozen=True)
class PlanForm:
    model: str = ""
    gpus: str = ""
    method: str = AUTO
    seq_len: str = "2048"
    micro_batch: str = ""


@dataclass(frozen=True)
class PlanOutcome:
    form: PlanForm
    plan: Plan | None
    #: Why there is no plan: bad input, named like the CLI does.
    error: str | None = None
    took_s: float = 0.0


def _positive_int(text: str, what: str) -> int | None:
    t = text.strip()
    if not t or t.lower() == AUTO:
        return None
    if not t.isdigit() or int(t) <= 0:
        raise PlannerInputError(f"{what} {t!r}: expected a positive whole number")
    return int(t)


def needs_network(model: str) -> bool:
    m = model.strip()
    return bool(_HUB_ID.fullmatch(m)) and find_catalog_entry(m) is None


def compute_plan(form: PlanForm, *, allow_network: bool = False) -> PlanOutcome:
    started = time.perf_counter()
    try:
        if not form.model.strip():
            raise PlannerInputError(
                "model: type a catalog name (llama-2-13b), a size (7b) or a path"
            )
        if not form.gpus.strip():
            raise PlannerInputError("GPUs: type them like 24xA800, 3x8xA800 or 8xH100")
        if needs_network(form.model) and not allow_network:
            raise PlannerInputError(
                f"{form.model.strip()!r} is not in the catalog: press enter to fetch its "
                "config.json from the Hugging Face Hub"
            )
        spec = resolve_model(form.model)
        cluster = build_cluster(form.gpus.strip())
        method: Method | None = None
        if form.method != AUTO:
            method = next((m for m in METHODS if m == form.method), None)
            if method is None:
                raise PlannerInputError(f"method {form.method!r}: one of {', '.join(METHODS)}")
        seq_len = _positive_int(form.seq_len, "seq len") or 2048
        micro = _positive_int(form.micro_batch, "micro-batch")
        constraints = Constraints(method=method, seq_len=seq_len, micro_batch_size=micro)
        plan = make_plan(spec, cluster, constraints)
    except PlannerInputError as exc:
        return PlanOutcome(form, None, str(exc), time.perf_counter() - started)
    return PlanOutcome(form, plan, None, time.perf_counter() - started)


def detected_gpus(state: DashState) -> str | None:
    """`3x8xA800` from the GPUs the dashboard sees, when they are in the planner's catalog."""
    nodes = [n for n in state.nodes.values() if n.gpus]
    if not nodes:
        return None
    first = next(iter(nodes[0].gpus.values())).sample
    if first.name is None or not first.memory_total_bytes:
        return None
    spec = gpu_from_nvml_name(first.name, first.memory_total_bytes)
    if spec is None:
        return None
    per_node = max(len(n.gpus) for n in nodes)
    return f"{len(nodes)}x{per_node}x{spec.name}"


def plan_columns(wide: bool) -> list[Column]:
    cols = [Column("rank", "#", 3), Column("setup", "setup", 22)]
    if wide:
        cols += [Column(k, k, 5) for k in ("wts", "grad", "opt", "act", "logit", "other")]
    else:
        cols += [Column("states", "w+g+o", 6), Column("act", "act", 5), Column("rest", "rest", 5)]
    cols += [Column("total", "total", 6), Column("fit", "fit", 3), Column("tps", "tok/s", 6)]
    if wide:
        cols.append(Column("step", "step s", 7))
    return cols


def plan_rows(plan: Plan, wide: bool, top: int = 30) -> list[Row]:
    """The best `top` that fit (recommendation first), else the smallest ones."""
    order = [i for i, c in enumerate(plan.candidates) if c.fits][:top]
    if not order:
        order = sorted(
            range(len(plan.candidates)), key=lambda i: plan.candidates[i].memory.total_bytes
        )[:top]
    rows = []
    for i in order:
        c = plan.candidates[i]
        m = c.memory
        rec = i == plan.recommended
        style = "bold green" if rec else ("" if c.fits else "bright_black")

        def g(n: int, style: str = style) -> Text:
            return Text(f"{n / fmt.GIB:.1f}".rjust(5), style=style)

        cells: list[str | Text] = [
            Text("★" if rec else str(i + 1), style=style),
            Text(c.setup.short_label(), style=style),
        ]
        other = m.buffers_bytes + m.framework_overhead_bytes + m.fragmentation_bytes
        if wide:
            cells += [g(m.weights_bytes), g(m.gradients_bytes), g(m.optimizer_bytes)]
            cells += [g(m.activations_bytes), g(m.logits_bytes), g(other)]
        else:
            cells.append(g(m.weights_bytes + m.gradients_bytes + m.optimizer_bytes))
            cells += [g(m.activations_bytes), g(m.logits_bytes + other)]
        cells.append(Text(f"{m.total_bytes / fmt.GIB:.1f}".rjust(6), style=style or "bold"))
        cells.append(Text(" ✓", style="green") if c.fits else Text(" ✗", style="red"))
        cells.append(Text(fmt.rate(c.time.tokens_per_s).rjust(6), style=style))
        if wide:
            cells.append(Text(f"{c.time.step_time_s:.2f}".rjust(7), style=style))
        rows.append(Row(f"c{i}", tuple(cells)))
    return rows


def plan_summary(outcome: PlanOutcome) -> Text:
    text = Text()
    if outcome.error is not None:
        text.append(outcome.error, style="bold yellow")
        return text
    plan = outcome.plan
    assert plan is not None
    spec, cl = plan.model, plan.cluster
    fits = sum(c.fits for c in plan.candidates)
    text.append(f"{spec.name}", style="bold")
    text.append(
        f" · {spec.params_total / 1e9:.2f}B params · {cl.nodes}×{cl.gpus_per_node}×{cl.gpu.name}"
    )
    text.append(f" · {fits} of {len(plan.candidates)} setups fit", style="dim")
    rec = plan.recommendation
    text.append("\n")
    if rec is None:
        text.append(
            "Nothing fits: try qlora, more GPUs, a shorter seq len or offload.", style="bold red"
        )
    else:
        text.append("Recommended: ", style="bold green")
        text.append(
            f"{rec.setup.label()} — {rec.memory.total_bytes / fmt.GIB:.1f} GiB per GPU, "
            f"~{fmt.rate(rec.time.tokens_per_s)} tokens/s  (ctrl+s saves it as a recipe)"
        )
    return text
