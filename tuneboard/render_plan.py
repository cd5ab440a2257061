"""Rich rendering of a plan: a header, the ranked table, the recommendation and why."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from planner.memory.overhead import USABLE_FRACTION
from planner.search import Plan
from planner.setups import OPTIMIZER_IMPLEMENTATIONS

GIB = 1024**3


def _g(n: int) -> str:
    return f"{n / GIB:.1f}"


def _rate(tokens_per_s: float) -> str:
    if tokens_per_s >= 1e6:
        return f"{tokens_per_s / 1e6:.2f}M"
    if tokens_per_s >= 1e3:
        return f"{tokens_per_s / 1e3:.1f}k"
    return f"{tokens_per_s:.0f}"


def _count(n: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _rows(plan: Plan, show_all: bool, top: int) -> list[int]:
    """Rows to show: every one with --all; else the best `top` that fit (the
    recommendation first), or when nothing fits the `top` smallest."""
    if show_all:
        return list(range(len(plan.candidates)))
    fitting = [i for i, c in enumerate(plan.candidates) if c.fits]
    if fitting:
        return fitting[:top]
    by_size = sorted(
        range(len(plan.candidates)), key=lambda i: plan.candidates[i].memory.total_bytes
    )
    return by_size[:top]


def render_plan(
    con: Console, plan: Plan, data: dict[str, Any], *, show_all: bool = False, top: int = 12
) -> None:
    spec, cl = plan.model, plan.cluster
    params = f"{spec.params_total / 1e9:.2f}B params"
    if spec.is_moe:
        params += f" ({spec.params_active / 1e9:.1f}B active, {spec.num_experts} experts)"
    con.print(
        f"[bold]{spec.name}[/] · {params} · {spec.num_layers} layers · hidden {spec.hidden_size}"
        f" · vocab {spec.vocab_size}  [dim]({spec.source})[/]"
    )
    usable = _g(round(cl.gpu.memory_bytes * USABLE_FRACTION))
    network_gbps = cl.inter_node_bytes_per_s * 8 / 1e9
    con.print(
        f"[bold]{cl.nodes} × {cl.gpus_per_node} × {cl.gpu.name}[/] ({_g(cl.gpu.memory_bytes)} GiB, "
        f"usable {usable} GiB = {USABLE_FRACTION:.0%}) · node RAM "
        f"{cl.node_ram_bytes / GIB:.0f} GiB · {network_gbps:.0f} Gb/s"
    )
    cal = cl.calibration
    if cal is not None:
        con.print(
            f"calibrated on this cluster's runs: allocator +{cal.fragmentation_fraction:.1%}, "
            f"{cal.non_torch_bytes / GIB:.2f} GiB outside PyTorch per GPU (torch "
            f"{cal.torch_version or '?'}, {cal.ranks} ranks of {cal.jobs} jobs; {cal.source})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    first = plan.candidates[0].setup if plan.candidates else None
    if first is not None:
        con.print(
            f"seq {first.seq_len} · {first.precision} · {first.optimizer} "
            f"({OPTIMIZER_IMPLEMENTATIONS[first.optimizer]})"
            + (f" · LoRA r={first.lora_rank} {first.lora_targets}" if first.is_adapter else "")
        )
    for note in plan.notes:
        con.print(f"[yellow]note:[/] {note}")

    wide = con.width >= 118
    table = Table(
        title="GiB per GPU" + ("" if wide else "  (rest = logits + buffers + overhead)"),
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    columns: list[tuple[str, str]] = [("", "left"), ("setup", "left")]
    if wide:
        columns += [(c, "right") for c in ("weights", "grads", "optim", "activ")]
        columns += [(c, "right") for c in ("logits", "buffers", "other")]
    else:
        columns += [(c, "right") for c in ("wts", "grad", "opt", "act", "rest")]
    columns += [("total", "right"), ("fit", "center"), ("tok/s", "right")]
    if wide:
        columns.append(("step", "right"))
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for i in _rows(plan, show_all, top):
        c = plan.candidates[i]
        m = c.memory
        is_rec = i == plan.recommended
        style = "bold green" if is_rec else ("" if c.fits else "dim")
        other = m.framework_overhead_bytes + m.fragmentation_bytes
        mark = "★" if is_rec else str(i + 1)
        if c.source == "trace":
            mark += "ᵗ"
        cells: list[str | Text] = [mark, c.setup.short_label()]
        cells += [_g(m.weights_bytes), _g(m.gradients_bytes), _g(m.optimizer_bytes)]
        cells.append(_g(m.activations_bytes))
        if wide:
            cells += [_g(m.logits_bytes), _g(m.buffers_bytes), _g(other)]
        else:
            cells.append(_g(m.logits_bytes + m.buffers_bytes + other))
        cells += [
            _g(m.total_bytes),
            Text("✓", style="green") if c.fits else Text("✗", style="red"),
            _rate(c.time.tokens_per_s),
        ]
        if wide:
            cells.append(f"{c.time.step_time_s:.2f}s")
        table.add_row(*cells, style=style)
    con.print(table)
    if any(
        c.setup.offload_optimizer != "none" or c.setup.offload_params != "none"
        for c in plan.candidates
    ):
        con.print("[dim]+oc/+on: optimizer offloaded to CPU/NVMe; +pc/+pn: parameters offloaded[/]")
    shown = len(_rows(plan, show_all, top))
    if shown < len(plan.candidates):
        n_fit = sum(c.fits for c in plan.candidates)
        con.print(
            f"[dim]{shown} of {len(plan.candidates)} shown, {n_fit} fit "
            "(--all: every one; --json: every number)[/]"
        )

    rec = plan.recommendation
    if rec is None:
        con.print("[bold red]Nothing fits.[/] Try --method qlora, more GPUs, a shorter --seq-len,")
        con.print("or offload (--zero 3 --offload-optimizer cpu --offload-params cpu).")
    else:
        m = rec.memory
        # Lines that each fit 80 columns: what to run, its memory, its speed.
        con.print(f"[bold green]Recommended:[/] {rec.setup.label()}")
        con.print(
            f"  {_g(m.total_bytes)} GiB per GPU, peak in {m.peak_phase} · "
            f"host RAM {m.host.cpu_bytes / GIB:.0f} GiB per node"
        )
        con.print(f"  ~{_rate(rec.time.tokens_per_s)} tokens/s · {rec.time.step_time_s:.2f} s/step")
        train_time = data["candidates"][plan.recommended]["train_time_s"]
        if train_time is not None:
            con.print(f"  {_count(data['train_tokens'])} tokens in ~{_duration(train_time)}")
        for note in rec.notes:
            con.print(f"  [yellow]note:[/] {note}")
    if plan.rejected:
        con.print("[bold]Faster-looking setups that do not fit:[/]")
        for line in plan.rejected:
            con.print(f"  • {line}")
    if "written" in data:
        con.print(
            f"Recipe written to [bold]{data['written']}[/]: set data.train to your dataset in "
            f"it, then tuneboard launch {data['written']}"
        )
