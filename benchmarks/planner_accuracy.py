"""Planner accuracy: the analytic estimate vs the fake-tensor trace (and, on a GPU, vs
the measured peak of a real training step of the same config).

    python benchmarks/planner_accuracy.py            # quick grid, CPU: analytic vs trace
    python benchmarks/planner_accuracy.py --grid full
    python benchmarks/planner_accuracy.py --gpu      # also measure on CUDA (needs a GPU)

Every row is one training setup on ONE GPU as the trace sees it (pure precision, ZeRO-0,
gradient accumulation 1, torch AdamW): tensor bytes only (no CUDA context, no
fragmentation) for analytic vs trace; on CUDA `torch.cuda.max_memory_allocated()` is the
tensor peak and `max_memory_reserved()` plus the non-PyTorch part read from NVML is the
whole-process peak the framework-overhead and fragmentation terms must cover.
Prints median and max relative error and the number of underestimates, and writes the
rows with the device name and library versions to benchmarks/results/.
Targets (issue 6): analytic within 3% (median) of trace; vs GPU: median <= 3%, no
underestimate worse than 5%.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.hf_config import find_catalog_entry, spec_from_hf_config  # noqa: E402
from planner.memory.breakdown import estimate_memory  # noqa: E402
from planner.setups import Method, Setup  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Row:
    model: str
    method: Method
    seq_len: int
    micro_batch: int
    ckpt: bool
    analytic_bytes: int
    trace_bytes: int | None
    cuda_allocated_bytes: int | None = None
    cuda_process_bytes: int | None = None
    trace_s: float | None = None


def _grid(kind: str) -> list[tuple[str, Method, int, int, bool]]:
    if kind == "quick":
        models = ["qwen2.5-0.5b"]
        methods: list[Method] = ["full", "lora", "freeze"]
        seqs, mbs, ckpts = [512, 2048], [1], [False, True]
    else:
        models = ["qwen2.5-0.5b", "llama-2-7b", "mistral-7b-v0.1", "opt-1.3b"]
        methods = ["full", "freeze", "lora", "qlora", "dora"]
        seqs, mbs, ckpts = [512, 2048], [1, 2], [False, True]
    return list(itertools.product(models, methods, seqs, mbs, ckpts))


def _setup(method: Method, seq: int, mb: int, ckpt: bool) -> Setup:
    return Setup(
        method=method,
        precision="bf16-pure",
        optimizer="adamw",
        zero_stage=0,
        fsdp=None,
        offload_optimizer="none",
        offload_params="none",
        gradient_checkpointing=ckpt,
        micro_batch_size=mb,
        seq_len=seq,
        global_batch_size=mb,
        lora_rank=16,
        lora_dropout=0.0,
    )


def _analytic(config: dict[str, Any], setup: Setup) -> int:
    from tests.unit.specs_for_tests import cluster_of

    spec = spec_from_hf_config(config, name="bench", source="config")
    mem = estimate_memory(spec, cluster_of(1, gpu="H100"), setup)
    return mem.total_bytes - mem.framework_overhead_bytes - mem.fragmentation_bytes


def _trace(config: dict[str, Any], setup: Setup) -> tuple[int, float]:
    from planner.trace import trace_training_step

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
    )
    return r.peak_bytes, r.elapsed_s


def _cuda_step(config: dict[str, Any], setup: Setup) -> tuple[int, int]:
    """Two real training iterations on CUDA; (max allocated, process peak) in bytes."""
    import pynvml
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if setup.method in ("qlora",):
        raise NotImplementedError("qlora on CUDA: load through bitsandbytes (not yet wired)")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    cfg = AutoConfig.for_model(**config)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).cuda()  # type: ignore[no-untyped-call]
    if setup.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if setup.method in ("lora", "dora"):
        import peft

        lora = peft.LoraConfig(
            r=setup.lora_rank,
            lora_alpha=2 * setup.lora_rank,
            target_modules="all-linear",
            use_dora=setup.method == "dora",
        )
        if setup.gradient_checkpointing:
            model.enable_input_require_grads()
        model = peft.get_peft_model(model, lora)
    elif setup.method == "freeze":
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in model.model.layers[-2:]:
            for p in layer.parameters():
                p.requires_grad_(True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, foreach=False, fused=False)
    ids = torch.arange(setup.micro_batch_size * setup.seq_len, device="cuda")
    ids = ids.remainder(cfg.vocab_size).view(setup.micro_batch_size, setup.seq_len)
    for _ in range(2):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        del loss
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    allocated = torch.cuda.max_memory_allocated()
    reserved = torch.cuda.max_memory_reserved()
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    pynvml.nvmlShutdown()
    non_torch = max(0, used - torch.cuda.memory_reserved())
    del model, opt, params
    torch.cuda.empty_cache()
    return allocated, reserved + non_torch


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=["quick", "full"], default="quick")
    parser.add_argument("--gpu", action="store_true", help="also measure each row on CUDA")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    rows: list[Row] = []
    for name, method, seq, mb, ckpt in _grid(args.grid):
        entry = find_catalog_entry(name)
        assert entry is not None, name
        config = entry.config_dict()
        setup = _setup(method, seq, mb, ckpt)
        analytic = _analytic(config, setup)
        trace_bytes, trace_s = _trace(config, setup) if method != "qlora" else (None, None)
        cuda_alloc = cuda_proc = None
        if args.gpu:
            try:
                cuda_alloc, cuda_proc = _cuda_step(config, setup)
            except NotImplementedError as exc:
                print(f"  skip CUDA for {name} {method}: {exc}")
        row = Row(
            name, method, seq, mb, ckpt, analytic, trace_bytes, cuda_alloc, cuda_proc, trace_s
        )
        rows.append(row)
        ratio = f"{analytic / trace_bytes:.3f}" if trace_bytes else "-"
        print(
            f"{name:<16} {method:<6} seq {seq:<5} mb {mb} ckpt {int(ckpt)}  analytic "
            f"{analytic / 2**30:7.2f} GiB  trace "
            f"{(trace_bytes or 0) / 2**30:7.2f} GiB  ratio {ratio}"
            + (f"  cuda {cuda_alloc / 2**30:7.2f} GiB" if cuda_alloc else "")
        )

    vs_trace = _stats([(r.analytic_bytes, r.trace_bytes) for r in rows if r.trace_bytes])
    vs_cuda = _stats(
        [(r.analytic_bytes, r.cuda_allocated_bytes) for r in rows if r.cuda_allocated_bytes]
    )
    trace_vs_cuda = _stats(
        [
            (r.trace_bytes, r.cuda_allocated_bytes)
            for r in rows
            if r.trace_bytes and r.cuda_allocated_bytes
        ]
    )
    print("analytic vs trace:", json.dumps(vs_trace))
    if vs_cuda:
        print("analytic vs CUDA :", json.dumps(vs_cuda))
        print("trace vs CUDA    :", json.dumps(trace_vs_cuda))
    if not args.no_write:
        import importlib.metadata as md

        versions: dict[str, str | None] = {}
        for pkg in ("torch", "transformers", "peft"):
            try:
                versions[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                versions[pkg] = None
        device = platform.processor() or platform.machine()
        if args.gpu:
            import torch

            device = torch.cuda.get_device_name()
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d")
        out = RESULTS / f"planner_accuracy-{args.grid}-{stamp}-{device.replace(' ', '_')}.json"
        out.write_text(
            json.dumps(
                {
                    "device": device,
                    "versions": versions,
                    "grid": args.grid,
                    "analytic_vs_trace": vs_trace,
                    "analytic_vs_cuda": vs_cuda,
                    "trace_vs_cuda": trace_vs_cuda,
                    "rows": [r.__dict__ for r in rows],
                },
                indent=2,
            )
        )
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
