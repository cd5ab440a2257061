"""Rich rendering for launch and jobs: the preflight table, the fit verdict, dry-run commands,
the live log stream with its progress line, and job tables. Data comes from launcher/."""

from __future__ import annotations

import time
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from launcher.job.log_mirror import rank_label
from launcher.job.store import JobState, Progress
from launcher.job.sync import SyncResult
from launcher.job.torchrun import CommandPreview
from launcher.preflight.checks import CHECKS, Check, PreflightReport
from launcher.preflight.fit import FitReport
from tuneboard.render_memory import render_memory

GIB = 1024**3
_MARKS = {
    "ok": ("✓", "green"),
    "warn": ("!", "yellow"),
    "fail": ("✗", "bold red"),
    "skip": ("-", "dim"),
}
#: Up to this many nodes the preflight table has a column per node.
TRANSPOSE_UP_TO_NODES = 4
_NODE_STYLES = ("cyan", "magenta", "blue", "green", "yellow", "bright_cyan", "bright_magenta")


def _cell(check: Check | None) -> Text:
    if check is None:
        return Text("")
    mark, style = _MARKS[check.status]
    short = check.short if check.status != "skip" else ""
    return Text(f"{mark} ", style=style) + Text(short)


def render_preflight(console: Console, report: PreflightReport) -> None:
    """A ✓/✗ table: one column per node when there are few (it reads down), else one row."""
    present = [name for name in CHECKS if any(n.check(name) for n in report.nodes)]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    if len(report.nodes) <= TRANSPOSE_UP_TO_NODES:
        table.add_column("check", no_wrap=True)
        for node in report.nodes:
            table.add_column(f"{node.node.name} #{node.node_rank}", no_wrap=True)
        for name in present:
            table.add_row(name, *(_cell(node.check(name)) for node in report.nodes))
    else:
        table.add_column("node", no_wrap=True)
        for name in present:
            table.add_column(name, no_wrap=True)
        for node in report.nodes:
            table.add_row(
                f"{node.node.name} #{node.node_rank}",
                *(_cell(node.check(name)) for name in present),
            )
    console.print(table)
    for name, check in report.failures:
        console.print(
            Text("✗ ", style="bold red") + Text(f"{name} {check.name}: {check.detail}"),
            soft_wrap=True,
        )
    for node in report.nodes:
        for check in node.checks:
            if check.status == "warn":
                line = Text(f"{node.node.name} {check.name}: {check.detail}")
                console.print(Text("! ", style="yellow") + line, soft_wrap=True)
    for note in report.notes:
        console.print(Text(f"  {note}", style="dim"), soft_wrap=True)
    verdict = "preflight passed" if report.ok else "preflight failed"
    if report.nproc_per_node is None and report.ok is False and not report.failures:
        verdict += ": cannot tell how many processes per node (no GPU found; --nproc-per-node)"
    console.print(
        Text(f"{verdict} in {report.duration_s:.2f} s", style="green" if report.ok else "bold red")
    )


def render_fit(console: Console, fit: FitReport, force: bool) -> None:
    if fit.status == "fits":
        console.print(Text("✓ fit: ", style="green") + Text(fit.reason), soft_wrap=True)
    elif fit.status == "skipped":
        console.print(Text("- fit: ", style="dim") + Text(fit.reason), soft_wrap=True)
    else:
        console.print(Text("✗ fit: ", style="bold red") + Text(fit.reason), soft_wrap=True)
        if fit.breakdown is not None:
            console.print(breakdown_table(fit))
        if force:
            console.print(Text("--force: launching anyway", style="yellow"))
        else:
            console.print("refusing to launch: the planner says it will not fit (--force to try)")
    for warning in fit.warnings:
        console.print(Text("! ", style="yellow") + Text(warning), soft_wrap=True)


def breakdown_table(fit: FitReport) -> Table:
    mem = fit.breakdown
    assert mem is not None
    table = Table(box=box.SIMPLE_HEAD, title=f"per GPU: {fit.setup_label} on {fit.gpu_name}")
    table.add_column("term")
    table.add_column("GiB", justify="right")
    for term, value in (
        ("weights", mem.weights_bytes),
        ("gradients", mem.gradients_bytes),
        ("optimizer states", mem.optimizer_bytes),
        ("activations", mem.activations_bytes),
        ("logits", mem.logits_bytes),
        ("buffers", mem.buffers_bytes),
        ("framework overhead", mem.framework_overhead_bytes),
        ("fragmentation", mem.fragmentation_bytes),
    ):
        table.add_row(term, f"{value / GIB:.2f}")
    table.add_row(
        Text("total (peak)", style="bold"), Text(f"{mem.total_bytes / GIB:.2f}", style="bold")
    )
    table.add_row("usable", f"{mem.usable_bytes / GIB:.2f}")
    return table


def render_previews(console: Console, previews: tuple[CommandPreview, ...]) -> None:
    for p in previews:
        ranks = f"{p.ranks[0]}-{p.ranks[-1]}" if len(p.ranks) > 1 else str(p.ranks[0])
        console.print(Text(f"# {p.node} (node rank {p.node_rank}, ranks {ranks})", style="bold"))
        console.print(p.shell_line(), soft_wrap=True, markup=False, highlight=False)
    secrets = sorted({name for p in previews for name, value in p.env if value is None})
    if secrets:
        console.print(
            Text(f"secrets passed through the SSH channel, shown by name: {', '.join(secrets)}")
        )


def render_sync(console: Console, results: list[tuple[str, SyncResult | None, str | None]]) -> None:
    for name, value, error in results:
        if value is None:
            console.print(Text("✗ ", style="bold red") + Text(f"{name}: {error}"))
        else:
            console.print(
                Text(
                    f"synced {name}: {value.copied} copied ({value.bytes_copied / 1e6:.1f} MB), "
                    f"{value.unchanged} unchanged",
                    style="dim",
                )
            )


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def format_progress(p: Progress, ended: bool = False) -> str:
    """`step 10/40 (25%) · loss 1.2 · 2.3k tok/s · ETA 3 m` (no ETA once the job ended)."""
    parts = []
    if p.step is not None:
        total = f"/{p.total_steps}" if p.total_steps else ""
        pct = f" ({100 * p.step / p.total_steps:.0f}%)" if p.total_steps else ""
        parts.append(f"step {p.step}{total}{pct}")
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4g}")
    if p.tokens_per_s is not None:
        rate = p.tokens_per_s
        parts.append(f"{rate / 1000:.1f}k tok/s" if rate >= 1000 else f"{rate:.0f} tok/s")
    if p.eta_s is not None and not ended:
        parts.append(f"ETA {format_duration(p.eta_s)}")
    return " · ".join(parts) or "starting"


class TerminalSink:
    """The running job on the terminal: `node/rank` lines, and a progress line that stays
    at the bottom on a terminal (printed as a line of its own when piped)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._styles: dict[str, str] = {}
        self._live: Live | None = None
        if console.is_terminal:
            self._live = Live(Text(""), console=console, transient=True, auto_refresh=False)
            self._live.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _style(self, node: str) -> str:
        return self._styles.setdefault(node, _NODE_STYLES[len(self._styles) % len(_NODE_STYLES)])

    def line(self, node: str, rank: int | None, text: str) -> None:
        prefix = Text(f"{node}/{rank_label(rank)} ", style=self._style(node))
        self.console.print(prefix + Text(text), soft_wrap=True)

    def progress(self, progress: Progress) -> None:
        text = format_progress(progress)
        if self._live is not None:
            self._live.update(Text(text, style="bold"), refresh=True)
        else:
            self.console.print(Text(f"progress: {text}", style="bold"), soft_wrap=True)

    def event(self, text: str) -> None:
        self.console.print(Text(f"tuneboard: {text}", style="bold"), soft_wrap=True)


def job_summary(state: JobState, status: str, alive: bool) -> dict[str, Any]:
    """The `jobs --json` record of one job (a stable subset of state.json)."""
    return {
        "id": state.id,
        "name": state.name,
        "status": state.status,
        "status_shown": status,
        "supervisor_alive": alive,
        "created_at": state.created_at,
        "started_at": state.started_at,
        "ended_at": state.ended_at,
        "nodes": [n.name for n in state.nodes],
        "world_size": state.world_size,
        "progress": None if state.progress is None else vars(state.progress),
        "root_cause": None
        if state.root_cause is None
        else {
            "node": state.root_cause.node,
            "rank": state.root_cause.rank,
            "exit_code": state.root_cause.exit_code,
            "reason": state.root_cause.reason,
        },
        "resumed_from": state.resumed_from,
    }


def render_jobs(console: Console, rows: list[tuple[JobState, str]]) -> None:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("job", no_wrap=True)
    for col in ("status", "nodes", "step", "loss", "started", "took"):
        table.add_column(col, no_wrap=True)
    for state, status in rows:
        started = state.started_at or state.created_at
        end = state.ended_at or time.time()
        p = state.progress
        step = "-"
        if p is not None and p.step is not None:
            step = f"{p.step}/{p.total_steps}" if p.total_steps else str(p.step)
        table.add_row(
            state.id,
            Text(status, style=_status_style(state.status)),
            f"{len(state.nodes)}×{state.world_size // max(1, len(state.nodes))}",
            step,
            f"{p.loss:.4g}" if p is not None and p.loss is not None else "-",
            _when(started),
            format_duration(end - started),
        )
    console.print(table)


def _when(t: float) -> str:
    today = time.strftime("%Y%m%d") == time.strftime("%Y%m%d", time.localtime(t))
    return time.strftime("%H:%M" if today else "%m-%d", time.localtime(t))


def _status_style(status: str) -> str:
    return {"succeeded": "green", "failed": "bold red", "stopped": "yellow", "running": "cyan"}.get(
        status, ""
    )


def render_status(console: Console, state: JobState, status: str, job_dir: str) -> None:
    console.print(
        Text(f"{state.id}: ", style="bold") + Text(status, style=_status_style(state.status))
    )
    if status == "lost":
        console.print(
            f"its supervisor (pid {state.supervisor_pid} on {state.supervisor_host}) is gone while "
            f"the job was {state.status}: it may still run on the nodes; "
            f"`tuneboard stop {state.id}` stops it there",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"job directory: {job_dir}", markup=False, highlight=False, soft_wrap=True)
    if state.message:
        console.print(state.message, markup=False, highlight=False, soft_wrap=True)
    if state.progress is not None:
        console.print(format_progress(state.progress, ended=state.final))
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("node", "node rank", "ranks", "status", "exit", "pgid", "iface", "workdir"):
        table.add_column(col)
    for n in state.nodes:
        first = n.node_rank * n.nproc
        table.add_row(
            n.name,
            str(n.node_rank),
            f"{first}-{first + n.nproc - 1}",
            n.status,
            "-" if n.exit_code is None else str(n.exit_code),
            "-" if n.pgid is None else str(n.pgid),
            n.iface or "-",
            n.workdir,
        )
    console.print(table)
    render_memory(console, state)
    cause = state.root_cause
    if cause is not None:
        where = cause.node + (f" rank {cause.rank}" if cause.rank is not None else "")
        console.print(Text("root cause: ", style="bold red") + Text(f"{where}: {cause.reason}"))
        for line in cause.last_lines:
            console.print(Text(f"  {line}", style="dim"), soft_wrap=True)
