"""Planner accuracy: the analytic estimate vs the fake-tensor trace (and, on a GPU, vs
the measured peak of a real training step of the same config).

    python benchmarks/planner_accuracy.py            # quick grid, CPU: analytic vs trace
    python benchmarks/planner_accuracy.py --grid full
    python benchmarks/planner_accuracy.py --gpu      # also measure on CUDA (needs a GPU)
    python benchmarks/planner_accuracy.py --gpu --grid full --models llama-2-7b --zero 3

Every ZeRO-0 row is one training setup on ONE GPU as the trace sees it (pure bf16,
gradient accumulation 1, torch AdamW single-tensor): tensor bytes only (no CUDA context,
no fragmentation) for analytic vs trace. With `--gpu` each row also runs two real
training iterations on CUDA (tests/support/real_step.py: the method applied by the
recipes' own functions, QLoRA loaded through bitsandbytes): `max_memory_allocated()` is
the tensor peak the analytic tensor peak must match, and `max_memory_reserved()` plus
the non-PyTorch part read from NVML is the whole-process peak the planner's total
(framework overhead and fragmentation included) must cover.
`--gpu` also adds the ZeRO axis: DeepSpeed ZeRO 1/2/3 through `deepspeed.initialize` in
one process (world size 1, the recipes' DeepSpeed config, bf16-mixed: DeepSpeed's fp32
master weights), compared with the planner's estimate of the same Setup with that
zero_stage on a 1-GPU cluster. The trace is one unsharded rank, so ZeRO rows have none.

Prints median and max relative error and the number of underestimates, and writes the
rows with the device name and library versions to benchmarks/results/ (after every row,
so a run cut short keeps what it measured). A row whose CUDA step fails (out of memory,
say) records the error and the run goes on.
Targets (issue 6): analytic within 3% (median) of trace; vs GPU: median <= 3%, no
underestimate worse than 5%.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.hf_config import spec_from_hf_config  # noqa: E402
from planner.layers import trainable_params  # noqa: E402
from planner.memory.breakdown import estimate_memory  # noqa: E402
from planner.model_catalog import find_catalog_entry  # noqa: E402
from planner.setups import METHODS, Method, Precision, Setup  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PACKAGES = ("torch", "transformers", "peft", "deepspeed", "bitsandbytes", "accelerate")


@dataclass(frozen=True)
class Point:
    """One grid point: a model, a method and the step's shape; zero_stage 0 = no DeepSpeed."""

    model: str
    method: Method
    seq_len: int
    micro_batch: int
    ckpt: bool
    zero_stage: int = 0

    @property
    def precision(self) -> Precision:
        # ZeRO-0: LLaMA-Factory's pure bf16 (what the trace runs); DeepSpeed: bf16 with
        # fp32 master weights, its standard layout and the recipes' default.
        return "bf16-mixed" if self.zero_stage else "bf16-pure"


@dataclass(frozen=True)
class Row:
    model: str
    method: Method
    seq_len: int
    micro_batch: int
    ckpt: bool
    analytic_bytes: int  # the planner's tensor peak (total - overhead - fragmentation)
    trace_bytes: int | None
    cuda_allocated_bytes: int | None = None  # torch.cuda.max_memory_allocated()
    cuda_process_bytes: int | None = None  # max_memory_reserved() + non-PyTorch (NVML)
    trace_s: float | None = None
    zero_stage: int = 0
    precision: Precision = "bf16-pure"
    analytic_total_bytes: int | None = None  # the planner's whole-GPU peak
    planner_trainable_params: int | None = None
    cuda_reserved_bytes: int | None = None
    cuda_non_torch_bytes: int | None = None
    cuda_nvml_scope: str | None = None  # "process" or "device" (whole GPU)
    cuda_trainable_params: int | None = None
    cuda_s: float | None = None
    cuda_error: str | None = None


def _grid(kind: str, gpu: bool) -> list[Point]:
    if kind == "quick":
        models = ["qwen2.5-0.5b"]
        methods: list[Method] = ["full", "lora", "freeze"]
        seqs, mbs, ckpts = [512, 2048], [1], [False, True]
        zero_methods: list[Method] = ["full", "lora"]
        zeros = [2, 3]
    else:
        models = ["qwen2.5-0.5b", "llama-2-7b", "mistral-7b-v0.1", "opt-1.3b"]
        methods = ["full", "freeze", "lora", "qlora", "dora"]
        seqs, mbs, ckpts = [512, 2048], [1, 2], [False, True]
        zero_methods = ["full", "lora", "qlora"]
        zeros = [1, 2, 3]
    points: list[Point] = []
    for model in models:  # model-major: one model's rows share its QLoRA base on disk
        for method, seq, mb, ckpt in itertools.product(methods, seqs, mbs, ckpts):
            points.append(Point(model, method, seq, mb, ckpt))
        if gpu:
            for zero, method, seq, mb, ckpt in itertools.product(
                zeros, zero_methods, seqs, mbs, ckpts
            ):
                points.append(Point(model, method, seq, mb, ckpt, zero))
    return points


def _setup(point: Point) -> Setup:
    from tests.support.real_step import one_gpu_setup

    return one_gpu_setup(
        point.method,
        zero=point.zero_stage,
        ckpt=point.ckpt,
        micro_batch=point.micro_batch,
        seq_len=point.seq_len,
        lora_rank=16,
        precision=point.precision,
    )


def _analytic(config: dict[str, Any], setup: Setup) -> tuple[int, int, int]:
    """(tensor peak, whole-GPU peak, trainable parameters) on a 1-GPU H100 cluster."""
    from tests.support.specs import cluster_of

    spec = spec_from_hf_config(config, name="bench", source="config")
    mem = estimate_memory(spec, cluster_of(1, gpu="H100"), setup)
    tensor = mem.total_bytes - mem.framework_overhead_bytes - mem.fragmentation_bytes
    return tensor, mem.total_bytes, trainable_params(spec, setup)


def _trace(config: dict[str, Any], setup: Setup) -> tuple[int, float]:
    from planner.fake_trace import trace_training_step
    from planner.trace_plan import TRACE_OPTIMIZER

    method = "lora" if setup.method == "qlora" else setup.method
    r = trace_training_step(
        config,
        method=method,
        seq_len=setup.seq_len,
        micro_batch=setup.micro_batch_size,
        gradient_checkpointing=setup.gradient_checkpointing,
        lora_rank=setup.lora_rank,
        lora_alpha=2 * setup.lora_rank,
        warm_start=True,
        optimizer=TRACE_OPTIMIZER[setup.optimizer],
    )
    return r.peak_bytes, r.elapsed_s


def _cuda(config: dict[str, Any], setup: Setup, qlora_dir: Path) -> dict[str, Any]:
    """The row's CUDA fields from two real training iterations; a failure (out of memory,
    say) is recorded as cuda_error and the GPU is cleaned for the next row."""
    import torch

    from tests.support.real_step import real_training_step

    started = time.perf_counter()
    try:
        m = real_training_step(config, setup, device="cuda", qlora_base_dir=qlora_dir)
    except Exception as exc:  # noqa: BLE001 - record this row's failure; the grid goes on
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        error = f"{type(exc).__name__}: {first}"[:300]
    else:
        return {
            "cuda_allocated_bytes": m.allocated_peak_bytes,
            "cuda_process_bytes": m.process_peak_bytes,
            "cuda_reserved_bytes": m.reserved_peak_bytes,
            "cuda_non_torch_bytes": m.non_torch_bytes,
            "cuda_nvml_scope": m.nvml_scope,
            "cuda_trainable_params": m.params_trainable,
            "cuda_s": m.elapsed_s,
        }
    gc.collect()
    torch.cuda.empty_cache()
    return {"cuda_error": error, "cuda_s": time.perf_counter() - started}


def _stats(pairs: list[tuple[int, int]]) -> dict[str, float]:
    errors = [(est - ref) / ref for est, ref in pairs if ref > 0]
    if not errors:
        return {}
    return {
        "n": len(errors),
        "median_abs_error": statistics.median(abs(e) for e in errors),
        "max_abs_error": max(abs(e) for e in errors),
        "underestimates": sum(e < 0 for e in errors),
        "worst_underestimate": min(errors),
    }


def _summary(rows: list[Row]) -> dict[str, Any]:
    plain = [r for r in rows if r.zero_stage == 0]
    by_zero: dict[str, dict[str, float]] = {}
    for stage in sorted({r.zero_stage for r in rows if r.zero_stage}):
        by_zero[str(stage)] = _stats(
            [
                (r.analytic_bytes, r.cuda_allocated_bytes)
                for r in rows
                if r.zero_stage == stage and r.cuda_allocated_bytes
            ]
        )
    return {
        "analytic_vs_trace": _stats(
            [(r.analytic_bytes, r.trace_bytes) for r in plain if r.trace_bytes]
        ),
        "analytic_vs_cuda": _stats(
            [(r.analytic_bytes, r.cuda_allocated_bytes) for r in plain if r.cuda_allocated_bytes]
        ),
        "trace_vs_cuda": _stats(
            [
                (r.trace_bytes, r.cuda_allocated_bytes)
                for r in plain
                if r.trace_bytes and r.cuda_allocated_bytes
            ]
        ),
        "analytic_vs_cuda_by_zero": by_zero,
        "analytic_total_vs_cuda_process": _stats(
            [
                (r.analytic_total_bytes, r.cuda_process_bytes)
                for r in rows
                if r.analytic_total_bytes and r.cuda_process_bytes
            ]
        ),
        "trainable_mismatches": sum(
            r.cuda_trainable_params is not None
            and r.cuda_trainable_params != r.planner_trainable_params
            for r in rows
        ),
        "cuda_errors": sum(r.cuda_error is not None for r in rows),
    }


def _environment(gpu: bool) -> dict[str, Any]:
    """Device name and library versions (read from package metadata: nothing imported,
    except torch on a GPU run, for the device)."""
    import importlib.metadata as md

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    env: dict[str, Any] = {
        "device": platform.processor() or platform.machine(),
        "device_memory_bytes": None,
        "versions": versions,
    }
    if gpu:
        import torch

        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env["device"] = torch.cuda.get_device_name()
        env["device_memory_bytes"] = int(props.total_memory)
        versions["cuda"] = torch.version.cuda
    return env


def _no_gpu_reason() -> str | None:
    """Why `--gpu` cannot run here, in one line; None when it can."""
    try:
        import torch
    except ImportError:
        return "--gpu needs torch (pip install tuneboard[train])"
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return f"--gpu needs a CUDA GPU: torch {torch.__version__} ({build}) sees none here"
    return None


def _pick(
    points: list[Point], models: str | None, methods: str | None, zeros: str | None
) -> list[Point]:
    def listed(text: str | None) -> set[str] | None:
        return None if text is None else {t.strip() for t in text.split(",") if t.strip()}

    want_models, want_methods, want_zeros = listed(models), listed(methods), listed(zeros)
    return [
        p
        for p in points
        if (want_models is None or p.model in want_models)
        and (want_methods is None or p.method in want_methods)
        and (want_zeros is None or str(p.zero_stage) in want_zeros)
    ]


def _write(out: Path, header: dict[str, Any], rows: list[Row]) -> None:
    data = {**header, **_summary(rows), "rows": [dataclasses.asdict(r) for r in rows]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(out)


def _gib(value: int | None) -> str:
    return f"{value / 2**30:7.2f}" if value else "      -"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--grid", choices=["quick", "full"], default="quick")
    parser.add_argument("--gpu", action="store_true", help="also measure each row on CUDA")
    parser.add_argument("--models", help="comma list: only these catalog models")
    parser.add_argument("--methods", help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--zero", help="comma list of ZeRO stages (0-3; 1-3 need --gpu)")
    parser.add_argument("--no-trace", action="store_true", help="skip the fake-tensor trace")
    parser.add_argument("--out", type=Path, help="results file (default: benchmarks/results/)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    if args.gpu:
        reason = _no_gpu_reason()
        if reason is not None:
            print(f"planner_accuracy: {reason}", file=sys.stderr)
            return 2
    points = _pick(_grid(args.grid, args.gpu), args.models, args.methods, args.zero)
    if not points:
        print(
            "planner_accuracy: --models/--methods/--zero select no row of the "
            f"{args.grid} grid" + ("" if args.gpu else " (ZeRO 1-3 rows need --gpu)"),
            file=sys.stderr,
        )
        return 2
    env = _environment(args.gpu)
    header = {**env, "grid": args.grid, "gpu": args.gpu}
    stamp = time.strftime("%Y%m%d")
    device = str(env["device"]).replace(" ", "_")
    out = args.out or RESULTS / f"planner_accuracy-{args.grid}-{stamp}-{device}.json"

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="planner-accuracy-") as tmp:
        for point in points:
            entry = find_catalog_entry(point.model)
            assert entry is not None, point.model
            config = entry.config_dict()
            setup = _setup(point)
            analytic, analytic_total, planner_trainable = _analytic(config, setup)
            trace_bytes = trace_s = None
            if point.zero_stage == 0 and point.method != "qlora" and not args.no_trace:
                trace_bytes, trace_s = _trace(config, setup)
            cuda: dict[str, Any] = {}
            if args.gpu:
                qlora_dir = Path(tmp) / point.model
                for other in Path(tmp).iterdir():  # one model's 16-bit base on disk at a time
                    if other != qlora_dir:
                        shutil.rmtree(other)
                cuda = _cuda(config, setup, qlora_dir)
            row = Row(
                model=point.model,
                method=point.method,
                seq_len=point.seq_len,
                micro_batch=point.micro_batch,
                ckpt=point.ckpt,
                analytic_bytes=analytic,
                trace_bytes=trace_bytes,
                trace_s=trace_s,
                zero_stage=point.zero_stage,
                precision=point.precision,
                analytic_total_bytes=analytic_total,
                planner_trainable_params=planner_trainable,
                **cuda,
            )
            rows.append(row)
            ratio = f"{analytic / trace_bytes:.3f}" if trace_bytes else "    -"
            line = (
                f"{point.model:<16} {point.method:<6} Z{point.zero_stage} seq {point.seq_len:<5} "
                f"mb {point.micro_batch} ckpt {int(point.ckpt)}  analytic {_gib(analytic)} GiB  "
                f"trace {_gib(trace_bytes)} GiB  ratio {ratio}"
            )
            if args.gpu:
                line += f"  cuda {_gib(row.cuda_allocated_bytes)} GiB"
                line += (
                    f"  process {_gib(row.cuda_process_bytes)} / plan {_gib(analytic_total)} GiB"
                )
                if row.cuda_error:
                    line += f"  FAILED {row.cuda_error}"
                elif row.cuda_trainable_params != planner_trainable:
                    line += (
                        f"  TRAINABLE {row.cuda_trainable_params} != planner {planner_trainable}"
                    )
            print(line, flush=True)
            if not args.no_write:
                _write(out, header, rows)

    summary = _summary(rows)
    print("analytic vs trace:", json.dumps(summary["analytic_vs_trace"]))
    if args.gpu:
        print("analytic vs CUDA :", json.dumps(summary["analytic_vs_cuda"]))
        print("trace vs CUDA    :", json.dumps(summary["trace_vs_cuda"]))
        for stage, stats in summary["analytic_vs_cuda_by_zero"].items():
            print(f"analytic vs CUDA, ZeRO-{stage}:", json.dumps(stats))
        print("plan total vs process peak:", json.dumps(summary["analytic_total_vs_cuda_process"]))
        print(
            f"trainable-count mismatches: {summary['trainable_mismatches']}, "
            f"failed CUDA rows: {summary['cuda_errors']}"
        )
    if not args.no_write:
        shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
        print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
