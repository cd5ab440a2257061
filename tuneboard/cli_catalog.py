"""`tuneboard models` and `tuneboard gpus`: what the planner knows."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    app.command(name="models", help="List the built-in model catalog (names for --model).")(models)
    app.command(name="gpus", help="List the GPU catalog (names for --gpus).")(gpus)


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    from planner.hf_config import spec_from_hf_config
    from planner.model_catalog import load_catalog
    from tuneboard.output import emit

    rows: list[dict[str, Any]] = []
    for entry in load_catalog():
        spec = spec_from_hf_config(
            entry.config, name=entry.name, source="catalog", hf_id=entry.hf_id
        )
        rows.append(
            {
                "name": entry.name,
                "hf_id": entry.hf_id,
                "aliases": list(entry.aliases),
                "model_type": spec.model_type,
                "params": spec.params_total,
                "params_active": spec.params_active,
                "num_layers": spec.num_layers,
                "hidden_size": spec.hidden_size,
                "vocab_size": spec.vocab_size,
                "note": entry.note,
            }
        )

    def render(con: Console) -> None:
        table = Table(header_style="bold")
        for col in ("name", "params", "layers", "hidden", "vocab", "type", "hf id"):
            table.add_column(
                col, justify="right" if col in ("params", "layers", "hidden", "vocab") else "left"
            )
        for r in rows:
            params = f"{r['params'] / 1e9:.2f}B"
            if r["params_active"] != r["params"]:
                params += f" ({r['params_active'] / 1e9:.1f}B act)"
            table.add_row(
                r["name"],
                params,
                str(r["num_layers"]),
                str(r["hidden_size"]),
                str(r["vocab_size"]),
                r["model_type"],
                r["hf_id"] or "",
            )
        con.print(table)
        con.print(
            "[dim]Also accepted: a size (7b, 30b, 0.5b), a config.json or folder, an HF id.[/]"
        )

    emit(rows, as_json, render)


def gpus(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    from planner.gpus import load_gpu_catalog
    from tuneboard.output import emit

    rows: list[dict[str, Any]] = [
        {
            "name": g.name,
            "memory_bytes": g.memory_bytes,
            "bf16_tflops": g.bf16_tflops,
            "fp16_tflops": g.fp16_tflops,
            "fp8_tflops": g.fp8_tflops,
            "fp32_tflops": g.fp32_tflops,
            "hbm_bytes_per_s": g.hbm_bytes_per_s,
            "nvlink_bytes_per_s": g.nvlink_bytes_per_s,
            "pcie_bytes_per_s": g.pcie_bytes_per_s,
            "mfu": g.mfu,
            "vendor": g.vendor,
        }
        for g in load_gpu_catalog()
    ]

    def render(con: Console) -> None:
        table = Table(header_style="bold")
        for col in ("name", "memory", "bf16 TFLOPS", "fp8 TFLOPS", "HBM", "NVLink", "MFU"):
            table.add_column(col, justify="left" if col == "name" else "right")
        for r in rows:
            table.add_row(
                r["name"],
                f"{r['memory_bytes'] / 1024**3:.0f} GiB",
                "-" if r["bf16_tflops"] is None else f"{r['bf16_tflops']:.0f}",
                "-" if r["fp8_tflops"] is None else f"{r['fp8_tflops']:.0f}",
                f"{r['hbm_bytes_per_s'] / 1e9:.0f} GB/s",
                "-"
                if r["nvlink_bytes_per_s"] is None
                else f"{r['nvlink_bytes_per_s'] / 1e9:.0f} GB/s",
                f"{r['mfu']:.2f}",
            )
        con.print(table)

    emit(rows, as_json, render)
