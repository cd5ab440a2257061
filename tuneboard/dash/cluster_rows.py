"""Rows of the Cluster screen's table, built from the state. Rich text, no textual.

Two layouts: detailed (a row per node, then a row per GPU) and compact (one row per
node, a block per GPU): 64 nodes × 8 GPUs is 64 rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from rich.text import Text

from tuneboard.dash import format as fmt
from tuneboard.dash.alerts import Thresholds, node_staleness
from tuneboard.dash.state import DashNode
from tuneboard.dash.table_model import Cell, Column, Row

Health = Literal["ok", "stale", "lost"]

HEALTH_STYLE: dict[Health, str] = {"ok": "green", "stale": "yellow", "lost": "red"}
STALE_STYLE = "bright_black"


def detailed_columns(history_width: int) -> list[Column]:
    return [
        Column("gpu", "GPU", 16),
        Column("util", "util", 9),
        Column("memory", "memory", 9),
        Column("temp", "temp", 5),
        Column("power", "power", 9),
        Column("clock", "SM MHz", 6),
        Column("history", "history", history_width),
    ]


#: The compact view's node column: at least this wide, wider for longer node names
#: (`127.0.0.1:2222`), up to NODE_WIDTH_MAX.
NODE_WIDTH = 12
NODE_WIDTH_MAX = 28


def node_width(names: Iterable[str]) -> int:
    """The node column's width for these names: the health dot, a space, the name."""
    longest = max((len(n) for n in names), default=0)
    return max(NODE_WIDTH, min(NODE_WIDTH_MAX, 2 + longest))


def compact_columns(
    history_width: int, gpus_per_node: int, name_width: int = NODE_WIDTH
) -> list[Column]:
    return [
        Column("node", "node", name_width),
        Column("gpus", "GPUs", max(4, gpus_per_node)),
        Column("util", "util", 4),
        Column("memory", "memory", 10),
        Column("temp", "max°C", 5),
        Column("power", "power", 9),
        Column("cpu", "CPU", 4),
        Column("history", "history", history_width),
    ]


def _memory_style(used: int | None, total: int | None, t: Thresholds) -> str:
    if used is None or not total:
        return ""
    frac = used / total
    if frac >= t.memory_full_fraction:
        return "bold red"
    return "yellow" if frac >= 0.9 else ""


def _temp_style(temp: float | None) -> str:
    if temp is None:
        return ""
    return "bold red" if temp >= 85 else ("yellow" if temp >= 78 else "")


def _util_cell(util: float | None, width: int = 4) -> Text:
    if util is None:
        return Text(fmt.MISSING)
    text = Text(fmt.bar(util / 100, width), style="green")
    text.append(f"{util:4.0f}%")
    return text


def _node_label(node: DashNode, health: Health, extra: str = "") -> Text:
    text = Text("● ", style=HEALTH_STYLE[health])
    text.append(node.name, style="bold")
    if extra:
        text.append(extra, style="dim")
    return text


def _gpu_summary(node: DashNode) -> str:
    names = {g.sample.name for g in node.gpus.values() if g.sample.name}
    short = ""
    if len(names) == 1:
        short = names.pop().replace("NVIDIA ", "").split("-")[0]
    return f" {len(node.gpus)}×{short}" if node.gpus else ""


def _sums(node: DashNode) -> dict[str, float | None]:
    samples = [g.sample for g in node.gpus.values()]

    def total(attr: str) -> float | None:
        values = [getattr(s, attr) for s in samples]
        known = [v for v in values if v is not None]
        return float(sum(known)) if known else None

    temps = [s.temperature_c for s in samples if s.temperature_c is not None]
    return {
        "util": fmt.mean([s.util_percent for s in samples]),
        "used": total("memory_used_bytes"),
        "total": total("memory_total_bytes"),
        "power": total("power_mw"),
        "limit": total("power_limit_mw"),
        "temp": max(temps) if temps else None,
        "clock": fmt.mean([s.sm_clock_mhz for s in samples]),
    }


def _kw(power_mw: float | None, limit_mw: float | None) -> str:
    if power_mw is None:
        return fmt.MISSING
    if limit_mw is None:
        return f"{power_mw / 1e6:.1f}kW"
    return f"{power_mw / 1e6:.1f}/{limit_mw / 1e6:.1f}kW"


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def node_rows_detailed(
    node: DashNode, health: Health, t: Thresholds, history_width: int
) -> list[Row]:
    dim = STALE_STYLE if health != "ok" else ""
    sums = _sums(node)
    if node.nvml_error and not node.gpus:
        label = _node_label(node, health)
        return [Row(f"n:{node.name}", (label, Text("no GPU", style="yellow"), *[""] * 5))]
    used, total = _int(sums["used"]), _int(sums["total"])
    header = Row(
        f"n:{node.name}",
        (
            _node_label(node, health, _gpu_summary(node)),
            Text(fmt.percent(sums["util"]).rjust(9), style="bold"),
            Text(fmt.memory(used, total, digits=0).rjust(9), style="bold"),
            Text(fmt.celsius(sums["temp"]).rjust(5), style=_temp_style(sums["temp"])),
            Text(_kw(sums["power"], sums["limit"]).rjust(9)),
            Text(fmt.mhz(sums["clock"]).rjust(6)),
            Text(fmt.sparkline(node.util_history, history_width), style="cyan"),
        ),
    )
    rows = [header]
    for gpu in node.gpus.values():
        s = gpu.sample
        if s.error is not None:
            rows.append(
                Row(
                    f"g:{node.name}:{s.index}",
                    (f"   {s.index}", Text(s.error, style="bold red"), "", "", "", "", ""),
                )
            )
            continue
        cells: tuple[Cell, ...] = (
            Text(f"   {s.index}"),
            _util_cell(s.util_percent),
            Text(
                fmt.memory(s.memory_used_bytes, s.memory_total_bytes).rjust(9),
                style=_memory_style(s.memory_used_bytes, s.memory_total_bytes, t),
            ),
            Text(fmt.celsius(s.temperature_c).rjust(5), style=_temp_style(s.temperature_c)),
            Text(fmt.watts(s.power_mw, s.power_limit_mw).rjust(9)),
            Text(fmt.mhz(s.sm_clock_mhz).rjust(6)),
            Text(fmt.sparkline(gpu.util_history, history_width), style="cyan"),
        )
        if dim:
            for cell in cells:
                if isinstance(cell, Text):
                    cell.stylize(dim)
        rows.append(Row(f"g:{node.name}:{s.index}", cells))
    return rows


_LEVELS = "▁▂▃▄▅▆▇█"


def gpu_blocks(node: DashNode, t: Thresholds, health: Health) -> Text:
    """One block per GPU: height = util, red when memory is near full or the GPU failed."""
    text = Text()
    for gpu in node.gpus.values():
        s = gpu.sample
        if s.error is not None:
            text.append("✗", style="bold red")
            continue
        if s.util_percent is None:
            text.append("·")
            continue
        level = _LEVELS[round(max(0.0, min(1.0, s.util_percent / 100)) * 7)]
        style = _memory_style(s.memory_used_bytes, s.memory_total_bytes, t) or "green"
        text.append(level, style=STALE_STYLE if health != "ok" else style)
    return text


def node_row_compact(node: DashNode, health: Health, t: Thresholds, history_width: int) -> Row:
    sums = _sums(node)
    cpu = node.host.cpu_percent if node.host is not None else None
    used, total = _int(sums["used"]), _int(sums["total"])
    label = _node_label(node, health)
    if node.nvml_error and not node.gpus:
        return Row(f"n:{node.name}", (label, Text("no GPU", style="yellow"), *[""] * 6))
    return Row(
        f"n:{node.name}",
        (
            label,
            gpu_blocks(node, t, health),
            Text(fmt.percent(sums["util"]).rjust(4)),
            Text(
                fmt.memory(used, total, digits=0).rjust(10),
                style=_memory_style(used, total, t),
            ),
            Text(fmt.celsius(sums["temp"]).rjust(5), style=_temp_style(sums["temp"])),
            Text(_kw(sums["power"], sums["limit"]).rjust(9)),
            Text(fmt.percent(cpu).rjust(4)),
            Text(fmt.sparkline(node.util_history, history_width), style="cyan"),
        ),
    )


def health_of(node: DashNode, now: float, t: Thresholds) -> Health:
    return node_staleness(node, now, t)


def gpu_details(node: DashNode, index: int | None, now: float) -> str:
    """Two lines about a node (index None) or one of its GPUs, for the details panel."""
    if index is None or index not in node.gpus:
        host = node.host
        cpu = fmt.percent(host.cpu_percent if host else None)
        ram = fmt.memory(
            host.memory_used_bytes if host else None, host.memory_total_bytes if host else None
        )
        seen = fmt.duration(node.silent_for(now))
        line1 = (
            f"{node.name} · driver {node.driver_version or fmt.MISSING} · last sample {seen} ago"
        )
        if node.message:
            line1 += f" · {node.message}"
        cores = host.cpu_count if host else None
        load = fmt.number(host.load_1m if host else None, ".1f")
        line2 = f"CPU {cpu} of {cores or fmt.MISSING} cores · load {load} · RAM {ram}"
        if node.nvml_error:
            line2 += f" · {node.nvml_error}"
        return f"{line1}\n{line2}"
    s = node.gpus[index].sample
    procs = (
        fmt.MISSING
        if s.processes is None
        else ", ".join(
            f"{p.pid} {p.name or '?'} {fmt.gib(p.used_memory_bytes)}G" for p in s.processes[:4]
        )
        or "none"
    )
    line1 = f"{node.name} GPU{s.index} · {s.name or fmt.MISSING} · {s.uuid or fmt.MISSING}"
    line2 = (
        f"SM {fmt.mhz(s.sm_clock_mhz)}/{fmt.mhz(s.sm_clock_max_mhz)} MHz · "
        f"mem util {fmt.percent(s.memory_util_percent)} · "
        f"PCIe tx {fmt.rate(s.pcie_tx_bytes_per_s)}B/s rx {fmt.rate(s.pcie_rx_bytes_per_s)}B/s · "
        f"ECC {_opt_int(s.ecc_corrected_errors)}/{_opt_int(s.ecc_uncorrected_errors)} · "
        f"procs {procs}"
    )
    return f"{line1}\n{line2}"


def _opt_int(value: int | None) -> str:
    return fmt.MISSING if value is None else str(value)
