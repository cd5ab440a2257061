"""Planned vs measured memory per GPU for `tuneboard status`: what the planner said at
launch (state.json `planned`) beside every rank's peaks (state.json `progress.memory`,
from the recipes' metrics.jsonl).

On CUDA the comparison is against reserved memory (what runs out first) and the tensor
peak; on a CPU run nothing but the process's resident set exists, so it stands in,
and the output says so: it includes the Python runtime and the libraries.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table

from launcher.job.store import JobState, RankMemory

GIB = 1024**3


@dataclass(frozen=True)
class MemoryRow:
    rank: int
    node: str
    device: str
    #: The measured figure compared with the plan: reserved peak on CUDA, RSS on CPU.
    measured_bytes: int | None
    measure: str  # "reserved" | "RSS"
    allocated_peak_bytes: int | None
    device_used_bytes: int | None
    #: measured / planned (CUDA: reserved vs planned total less context; CPU: RSS vs tensors)
    ratio: float | None


def memory_rows(state: JobState) -> list[MemoryRow]:
    memory = state.progress.memory if state.progress is not None else ()
    planned = state.planned
    rows = []
    reference = planned.tensor_bytes if planned is not None else None
    for m in memory:
        measured = m.measured_bytes
        ratio = measured / reference if measured is not None and reference else None
        rows.append(
            MemoryRow(
                rank=m.rank,
                node=m.node,
                device=m.device,
                measured_bytes=measured,
                measure=m.measure,
                allocated_peak_bytes=m.allocated_peak_bytes,
                device_used_bytes=m.device_used_bytes,
                ratio=ratio,
            )
        )
    return rows


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def _cpu_only(memory: tuple[RankMemory, ...]) -> bool:
    return bool(memory) and all(m.device == "cpu" for m in memory)


def render_memory(console: Console, state: JobState) -> None:
    """The planned-vs-measured block of `tuneboard status` (nothing when neither exists)."""
    planned = state.planned
    memory = state.progress.memory if state.progress is not None else ()
    if planned is None and not memory:
        return
    if planned is not None:
        where = f" on {planned.gpu_name}" if planned.gpu_name else " (CPU run: tensors only)"
        total = f"{planned.total_bytes / GIB:.2f} GiB per GPU, " if planned.total_bytes else ""
        console.print(
            f"memory planned for {planned.setup_label}{where}: {total}"
            f"{planned.tensor_bytes / GIB:.2f} GiB of tensors",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print("memory: not planned at launch (the fit check was skipped)")
    if not memory:
        console.print("measured: nothing yet (the first metrics line brings every rank's peaks)")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("rank", "node", "device", "measured GiB", "tensors GiB", "nvidia-smi GiB"):
        table.add_column(col, justify="right" if "GiB" in col or col == "rank" else "left")
    table.add_column("vs plan", justify="right")
    for row in memory_rows(state):
        table.add_row(
            str(row.rank),
            row.node,
            row.device,
            f"{_gib(row.measured_bytes)} ({row.measure})",
            _gib(row.allocated_peak_bytes),
            _gib(row.device_used_bytes),
            "-" if row.ratio is None else f"{row.ratio:.2f}x",
        )
    console.print(table)
    if _cpu_only(memory):
        console.print(
            "CPU run: the process's peak RSS stands in for GPU memory; it includes the Python "
            "runtime and the libraries (about 1-2 GiB), so it reads above the planned tensors",
            style="dim",
            soft_wrap=True,
        )
