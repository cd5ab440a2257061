"""`tuneboard plan`: per-GPU memory, what fits, estimated speed, a recommended config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from planner.errors import PlannerInputError
from tuneboard.cli_hints import MISSING_HINTS

if TYPE_CHECKING:
    from rich.console import Console

    from planner.specs import ClusterSpec

T = TypeVar("T", bound=str)

PLAN_HELP = """Will it fit, and what is the best way to run it?

For every sensible setup (method × ZeRO/FSDP × offload × checkpointing ×
micro-batch) prints the memory per GPU (weights, gradients, optimizer states,
activations, logits, buffers, framework overhead), marks what fits in 95% of
the GPU's memory, estimates tokens/s, and recommends one.

Examples:

  tuneboard plan --model 30b --gpus 24xA800

  tuneboard plan --model qwen2.5-7b --gpus 8xH100 --method lora --seq-len 4096

  tuneboard plan --model ./my-model/config.json --gpus A100-40GB:16 --json

  tuneboard plan --model llama-3.1-70b --gpus 2x8xH800 --method qlora --write recipe.yaml

Pin any dimension (--method, --zero, --micro-batch, ...); pinning all of them
gives exactly one candidate. Without --gpus the local GPUs are detected (NVML).
"""


def _with_calibration(cluster: ClusterSpec, path: Path | None, *, explicit: bool) -> ClusterSpec:
    """The cluster with this user's fitted constants for its GPU, when the file has them
    (a file named on the command line must exist; the default one may not)."""
    from planner.calibration import choose, load

    if path is None:
        return cluster
    if not path.is_file():
        if explicit:
            raise PlannerInputError(
                f"--calibration {path}: no such file (tuneboard plan --calibrate JOB writes it; "
                "'none' plans with the built-in constants)"
            )
        return cluster
    found = choose(load(path), cluster.gpu.name, cluster.nodes > 1)
    return replace(cluster, calibration=found) if found else cluster


def _calibrate(jobs: list[str], path: Path | None, as_json: bool) -> None:
    from dataclasses import asdict

    from tuneboard.calibrate import calibrate, default_calibration_path
    from tuneboard.output import emit

    target = path or default_calibration_path()
    fitted, skipped = calibrate(jobs, target)
    data = {
        "calibration_file": str(target),
        "fitted": [asdict(c) for c in fitted],
        "skipped": skipped,
    }

    def show(out: Console) -> None:
        for c in fitted:
            nodes = "multi-node" if c.multi_node else "one node"
            out.print(
                f"{c.gpu_name} ({nodes}, torch {c.torch_version or '?'}): allocator "
                f"+{c.fragmentation_fraction:.1%} over the tensors, "
                f"{c.non_torch_bytes / 2**30:.2f} GiB outside PyTorch per GPU "
                f"(from {c.ranks} ranks of {c.jobs} jobs)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        for line in skipped:
            out.print(f"skipped {line}", markup=False, highlight=False, style="dim")
        out.print(
            f"written to {target}; later plans for these GPUs use it", markup=False, soft_wrap=True
        )

    emit(data, as_json, show)


def _choice(value: str | None, allowed: tuple[T, ...], flag: str) -> T | None:
    if value is None:
        return None
    v = value.strip().lower()
    for a in allowed:
        if v == a:
            return a
    raise PlannerInputError(f"{flag} {value!r} is not one of: {', '.join(allowed)}")


def _parse_count(text: str | None, flag: str) -> float | None:
    """`1e9`, `2B`, `500M` tokens -> a float."""
    if text is None:
        return None
    t = text.strip().lower().replace("_", "")
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}.get(t[-1:], 1.0)
    number = t[:-1] if scale != 1.0 else t
    try:
        value = float(number) * scale
    except ValueError:
        raise PlannerInputError(
            f"{flag} {text!r}: write a token count like 2e9, 2B or 500M"
        ) from None
    if value <= 0:
        raise PlannerInputError(f"{flag} must be positive, got {text!r}")
    return value


def register(app: typer.Typer) -> None:
    app.command(name="plan", help=PLAN_HELP, no_args_is_help=True)(plan)


def plan(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Catalog name (llama-2-70b), size (7b, 30b, 0.5b), config.json or its folder, "
            "or an HF id (org/name; needs network).",
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            "-g",
            help="24xA800, 3x8xA800 (nodes×per-node×type), 8xH100, A100-40GB:16. "
            "Default: the local GPUs (NVML).",
        ),
    ] = None,
    gpus_per_node: Annotated[
        int | None, typer.Option(help="GPUs per node when --gpus gives a total [default: 8]")
    ] = None,
    node_ram: Annotated[
        str | None,
        typer.Option(help="Host RAM per node, e.g. 1TB, 512GiB [default: 2 × GPU memory per node]"),
    ] = None,
    network: Annotated[
        str | None,
        typer.Option(
            help="Inter-node bandwidth per node, e.g. 200gbps, 4x200gbps, 25GB/s [default: 200gbps]"
        ),
    ] = None,
    nvme: Annotated[
        str | None, typer.Option(help="Free NVMe per node for offload, e.g. 3TB")
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="full | freeze | lora | qlora | dora [default: full, then lora, then qlora]"
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="bf16-mixed (bf16 weights/grads, fp32 master + Adam) | bf16-pure (all bf16) | "
            "fp16-mixed | fp32 [default: bf16-mixed, fp16-mixed without bf16]"
        ),
    ] = None,
    optimizer: Annotated[
        str | None,
        typer.Option(
            help="adamw (torch fused, what the recipes run) | adamw-foreach | adamw-single | "
            "adamw-8bit | paged-adamw-8bit | adafactor | sgd [default: adamw]"
        ),
    ] = None,
    zero: Annotated[int | None, typer.Option("--zero", help="DeepSpeed ZeRO stage 0-3")] = None,
    fsdp: Annotated[
        str | None, typer.Option(help="FSDP instead of ZeRO: full | grad-op | hybrid")
    ] = None,
    offload_optimizer: Annotated[str | None, typer.Option(help="none | cpu | nvme")] = None,
    offload_params: Annotated[
        str | None, typer.Option(help="none | cpu | nvme (needs ZeRO-3)")
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            help="Pin activation checkpointing on or off [default: try both]",
            show_default=False,
        ),
    ] = None,
    micro_batch: Annotated[
        int | None, typer.Option(help="Micro-batch per GPU [default: try 1-16]")
    ] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per sample")] = 2048,
    global_batch: Annotated[
        int | None,
        typer.Option(help="Samples per optimizer step, all GPUs (sets gradient accumulation)"),
    ] = None,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank r")] = 16,
    lora_targets: Annotated[
        str, typer.Option(help="all-linear | attention | mlp | q_proj,v_proj,...")
    ] = "all-linear",
    lora_dropout: Annotated[
        float, typer.Option(help="LoRA dropout (adds a mask per input)")
    ] = 0.05,
    fused_ce: Annotated[
        bool, typer.Option("--fused-ce", help="Liger-style fused linear cross-entropy")
    ] = False,
    attention: Annotated[str, typer.Option(help="sdpa | flash | eager")] = "sdpa",
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel degree (Megatron-style)")] = 1,
    pp: Annotated[
        int, typer.Option("--pp", help="Pipeline-parallel degree; must divide the layers")
    ] = 1,
    train_tokens: Annotated[
        str | None,
        typer.Option(help="Tokens to train on (e.g. 2B = epochs × dataset): prints the time"),
    ] = None,
    epochs: Annotated[
        float, typer.Option(help="Passes over --train-tokens (time = epochs × tokens / tokens/s)")
    ] = 1.0,
    trace: Annotated[
        bool,
        typer.Option(
            "--trace",
            help="Measure the recommendation's activations by running the real HF model's "
            "training step on fake tensors (needs tuneboard[train]; seconds per shape)",
        ),
    ] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Show every candidate")] = False,
    top: Annotated[int, typer.Option(help="Rows to show without --all")] = 12,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output (docs/plan-json.md)")
    ] = False,
    write: Annotated[
        Path | None, typer.Option("--write", help="Write the recommendation as a recipe YAML")
    ] = None,
    calibrate: Annotated[
        list[str] | None,
        typer.Option(
            "--calibrate",
            metavar="JOB",
            help="Fit this cluster's allocator and CUDA/NCCL constants from finished GPU jobs "
            "(ids or directories; repeat the option) into the calibration file, then exit",
        ),
    ] = None,
    calibration: Annotated[
        str | None,
        typer.Option(
            "--calibration",
            metavar="FILE",
            help="Calibration file to plan with and to --calibrate into "
            "[default: ~/.config/tuneboard/calibration.json, used when it exists; 'none': "
            "the built-in constants]",
        ),
    ] = None,
) -> None:
    from planner.cluster_spec import build_cluster
    from planner.models import resolve_model_config
    from planner.report import plan_to_dict
    from planner.search import make_plan
    from planner.setups import (
        ATTENTIONS,
        FSDP_MODES,
        METHODS,
        OFFLOADS,
        OPTIMIZERS,
        PRECISIONS,
        Constraints,
    )
    from tuneboard.calibrate import NO_CALIBRATION, default_calibration_path
    from tuneboard.output import emit
    from tuneboard.render_plan import render_plan

    calibration_path = (
        None
        if calibration == NO_CALIBRATION
        else Path(calibration).expanduser()
        if calibration
        else default_calibration_path()
    )
    if calibrate:
        _calibrate(calibrate, calibration_path, as_json)
        return
    if model is None:
        raise PlannerInputError(f"--model/-m is required: {MISSING_HINTS['model']}")
    spec, hf_config = resolve_model_config(model)
    if gpus is None:
        from tuneboard.detect import detect_local_cluster

        cluster = detect_local_cluster(node_ram=node_ram, network=network, nvme=nvme)
    else:
        cluster = build_cluster(
            gpus, gpus_per_node=gpus_per_node, node_ram=node_ram, network=network, nvme=nvme
        )
    cluster = _with_calibration(cluster, calibration_path, explicit=calibration is not None)
    constraints = Constraints(
        method=_choice(method, METHODS, "--method"),
        precision=_choice(precision, PRECISIONS, "--precision"),
        optimizer=_choice(optimizer, OPTIMIZERS, "--optimizer"),
        zero_stage=zero,
        fsdp=_choice(fsdp, FSDP_MODES, "--fsdp"),
        offload_optimizer=_choice(offload_optimizer, OFFLOADS, "--offload-optimizer"),
        offload_params=_choice(offload_params, OFFLOADS, "--offload-params"),
        gradient_checkpointing=gradient_checkpointing,
        micro_batch_size=micro_batch,
        seq_len=seq_len,
        global_batch_size=global_batch,
        lora_rank=lora_rank,
        lora_targets=lora_targets,
        lora_dropout=lora_dropout,
        fused_ce=fused_ce,
        attention=_choice(attention, ATTENTIONS, "--attention") or "sdpa",
        tp=tp,
        pp=pp,
    )
    tokens = _parse_count(train_tokens, "--train-tokens")
    if epochs <= 0:
        raise PlannerInputError(f"--epochs must be positive, got {epochs}")
    if tokens is not None:
        tokens *= epochs
    result = make_plan(spec, cluster, constraints)
    traces = None
    if trace:
        from planner.trace_plan import refine_with_traces
        from tuneboard.output import error_console

        err = error_console()
        try:
            with err.status("tracing on fake tensors…") as status:
                result, traces = refine_with_traces(
                    result, hf_config, progress=lambda msg: status.update(msg + "…")
                )
        except PlannerInputError as exc:
            # The analytic plan still stands: show it, say why the trace did not run.
            err.print(f"warning: {exc}", markup=False, highlight=False)
            result = replace(result, notes=(*result.notes, f"trace failed: {exc}"))
    data: dict[str, Any] = plan_to_dict(result, tokens, traces)
    if write is not None:
        from tuneboard.plan_recipe import write_recipe

        written = write_recipe(result, write)
        data["written"] = str(written)
    emit(data, as_json, lambda con: render_plan(con, result, data, show_all=show_all, top=top))
