"""Text blocks of the Job screen, built from the state. Rich text, no textual."""

from __future__ import annotations

import math

from rich.text import Text

from tuneboard.dash import format as fmt
from tuneboard.dash.alerts import Alert
from tuneboard.dash.state import DashState

PHASE_STYLE = {
    "loading": "yellow",
    "training": "bold green",
    "saving": "cyan",
    "done": "bold cyan",
    "failed": "bold red",
}


def job_header(state: DashState) -> Text:
    """Name, phase, step, ETA first: what must survive a narrow terminal."""
    job = state.job
    info, last, status = job.info, job.last, job.status
    text = Text()
    text.append(info.name if info and info.name else "job", style="bold")
    text.append(" · ", style="dim")
    if status is None:
        text.append("no status yet", style="dim")
    elif status.phase is not None:
        text.append(status.phase, style=PHASE_STYLE[status.phase])
    else:
        text.append(status.raw_phase or fmt.MISSING)
    if last is None:
        text.append(" · no steps yet", style="dim")
    else:
        text.append(" · step ", style="dim")
        text.append(str(last.step), style="bold")
        if last.total_steps:
            text.append(f"/{last.total_steps} ({last.step / last.total_steps:.0%})")
        ended = status is not None and (
            status.phase in ("done", "failed") or status.raw_phase in ("stopped", "stopping")
        )
        if not ended:  # a finished or stopped job has no time left to show
            text.append(" · ETA ", style="dim")
            text.append(fmt.duration(last.eta_s), style="bold")
        text.append(" · elapsed ", style="dim")
        text.append(fmt.duration(last.elapsed_s))
        text.append(" · epoch ", style="dim")
        text.append(fmt.number(last.epoch, ".2f"))
    if info and info.model:
        text.append(" · ", style="dim")
        text.append(info.model)
    return text


def _history(state: DashState, attr: str, width: int) -> str:
    """One block per recent step, scaled to the window's own range."""
    values = [getattr(r, attr) for r in state.job.steps[-width:]]
    known = [v for v in values if v is not None and math.isfinite(v)]
    if not known:
        return ""
    return fmt.sparkline(values, width, top=max(known), bottom=min(known))


def job_stats(state: DashState, width: int = 120) -> Text:
    """Two lines: loss, EMA, grad norm; lr, tokens/s, MFU, memory peak."""
    last = state.job.last
    spark = 10 if width >= 100 else 6
    text = Text()
    loss = last.loss if last else None
    ema = state.job.loss_ema[-1] if state.job.loss_ema else None
    text.append("loss ", style="dim")
    bad = loss is not None and not math.isfinite(loss)
    text.append(fmt.number(loss, ".4f"), style="bold red" if bad else "bold")
    text.append("  EMA ", style="dim")
    text.append(fmt.number(ema, ".4f"), style="bold cyan")
    text.append("  grad norm ", style="dim")
    text.append(fmt.number(last.grad_norm if last else None, ".3g"))
    text.append(" " + _history(state, "grad_norm", spark), style="magenta")
    text.append("  tokens ", style="dim")
    text.append(fmt.rate(float(last.tokens_seen) if last and last.tokens_seen else None))
    text.append("\n")
    text.append("lr ", style="dim")
    text.append(fmt.number(last.learning_rate if last else None, ".3g"))
    text.append(" " + _history(state, "learning_rate", spark), style="yellow")
    text.append("  tok/s ", style="dim")
    text.append(fmt.rate(last.tokens_per_s if last else None), style="bold")
    text.append(" " + _history(state, "tokens_per_s", spark), style="green")
    text.append("  MFU ", style="dim")
    mfu = state.mfu()
    text.append(fmt.MISSING if mfu is None else f"{mfu:.0%}")
    text.append("  mem peak ", style="dim")
    peak = last.memory_peak_bytes if last else None
    measure = last.memory_measure if last else None
    if peak is None and last is not None:
        peak, measure = last.gpu_mem_peak_bytes, None  # an older recipe: rank 0's tensors
    text.append(fmt.MISSING if peak is None else f"{fmt.gib(peak)} GiB")
    if peak is not None and measure:
        text.append(f" {measure}", style="dim")
    info = state.job.info
    planned = info.planned_bytes if info else None
    if planned:
        text.append(" · plan ", style="dim")
        text.append(f"{fmt.gib(planned)} GiB")
        if peak is not None:
            ratio = peak / planned
            text.append(f" ({ratio:.2f}x)", style="bold yellow" if ratio > 1.1 else "")
    return text


def alerts_text(alerts: list[Alert], limit: int = 3) -> Text:
    text = Text()
    for i, alert in enumerate(alerts[:limit]):
        if i:
            text.append("\n")
        mark, style = ("✗ ", "bold red") if alert.level == "error" else ("▲ ", "bold yellow")
        text.append(mark + alert.text, style=style)
    if len(alerts) > limit:
        text.append(f"  (+{len(alerts) - limit} more)", style="dim")
    return text
