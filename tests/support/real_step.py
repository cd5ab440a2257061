"""Two real training iterations of a model built from its config, on CUDA or on CPU.

Shared by the benchmarks (benchmarks/real_step.py is its command line,
benchmarks/planner_accuracy.py its GPU grid) and the test that runs it on CPU.

This is the measurement behind `planner_accuracy.py --gpu`: on CUDA it returns the tensor
peak (`torch.cuda.max_memory_allocated()`), the caching allocator's peak
(`max_memory_reserved()`) and what the process holds outside PyTorch's allocator (CUDA
context, NCCL, read from NVML). On CPU it returns no memory figures: a CPU run only proves
the code path (tests/integration/test_planner_accuracy_path.py), so that the first GPU
session that runs it measures instead of debugging.

The model has random weights (no download) and the method is applied the way the
recipes apply it, through their own functions: tests/support/real_step_model.py.

ZeRO-0: `torch.optim.AdamW` with the flags of the setup's implementation steps the model
(`adamw`: fused, what the recipes run; `adamw-foreach`; `adamw-single`: the trace's
"adamw"), no gradient clipping; `bf16-mixed` keeps fp32 weights and runs the
forward under `torch.autocast(bfloat16)` (the HF Trainer's AMP). ZeRO 1-3: the same
AdamW, wrapped by `deepspeed.initialize` in one process (world size 1; nccl on CUDA,
gloo on CPU) with the recipes' own DeepSpeed config (`recipes.train.distributed_config`; the
Trainer's "auto" sizes filled from the hidden size as transformers does: reduce bucket
h², prefetch 0.9·h², persistence threshold 10·h).

Each iteration: forward with labels, backward, optimizer step, zero_grad. The memory peak
counts from just before the first forward, after the model, method and optimizer are set
up: the planner estimates the training step, not the loading.

Heavy libraries (torch, transformers, peft, bitsandbytes, deepspeed, pynvml) are imported
inside the functions.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from planner.setups import Method, Optimizer, Precision, Setup
from tests.support.real_step_model import (
    apply_method,
    bench_deepspeed_config,
    bench_recipe,
    build_model,
    free_memory,
    hf_config,
)

Device = Literal["cuda", "cpu"]
DEVICES: tuple[Device, ...] = ("cuda", "cpu")


class NoCudaError(RuntimeError):
    """device="cuda" on a machine where torch sees no CUDA device."""


@dataclass(frozen=True)
class StepMeasurement:
    """What two real training iterations did, and (CUDA only) what they took.

    Parameter counts are of unique parameters (tied weights once); under ZeRO-3 each
    partitioned parameter counts its full size (`ds_numel`). `*_bytes` are None on CPU.
    """

    device: str  # "cuda" or "cpu"
    device_name: str  # e.g. "NVIDIA H100 80GB HBM3", or the CPU's name
    method: Method
    precision: Precision
    zero_stage: int  # 0: no DeepSpeed
    params_total: int
    params_trainable: int
    trainable_tensors: int
    trainable_tensors_changed: int  # trainable tensors whose values the steps changed
    losses: tuple[float, ...]
    allocated_peak_bytes: int | None  # torch.cuda.max_memory_allocated()
    reserved_peak_bytes: int | None  # torch.cuda.max_memory_reserved()
    non_torch_bytes: int | None  # NVML's used memory minus PyTorch's reserved, at the end
    nvml_scope: str | None  # "process" (this pid's usage) or "device" (the whole GPU's)
    elapsed_s: float

    @property
    def process_peak_bytes(self) -> int | None:
        """The whole process's peak: the allocator's peak plus the non-PyTorch part."""
        if self.reserved_peak_bytes is None or self.non_torch_bytes is None:
            return self.reserved_peak_bytes
        return self.reserved_peak_bytes + self.non_torch_bytes


#: The planner's AdamW implementations as torch.optim.AdamW flags (the recipes run `adamw`:
#: transformers' `adamw_torch_fused`).
#: (foreach, fused) for each.
_ADAMW_FLAGS: dict[str, tuple[bool | None, bool]] = {
    "adamw": (None, True),
    "adamw-foreach": (True, False),
    "adamw-single": (False, False),
}


def _check(setup: Setup, device: str) -> None:
    problems = []
    if device not in DEVICES:
        problems.append(f"device {device!r} (use one of {', '.join(DEVICES)})")
    if setup.optimizer not in _ADAMW_FLAGS:
        problems.append(f"optimizer {setup.optimizer!r} (one of {', '.join(_ADAMW_FLAGS)})")
    if setup.precision == "fp16-mixed":
        problems.append("precision fp16-mixed (needs loss scaling; use bf16-mixed/-pure or fp32)")
    if setup.fsdp is not None:
        problems.append(f"fsdp {setup.fsdp!r} (one process: use zero_stage)")
    if setup.zero_stage not in (None, 0, 1, 2, 3):
        problems.append(f"zero_stage {setup.zero_stage!r}")
    if setup.offload_optimizer != "none" or setup.offload_params != "none":
        problems.append("offload (not measured here)")
    if setup.tp != 1 or setup.pp != 1:
        problems.append(f"tp {setup.tp} / pp {setup.pp} (one process: use 1)")
    if setup.fused_ce:
        problems.append("fused_ce (Liger kernels are not applied here)")
    if problems:
        raise ValueError("real_training_step cannot run " + "; ".join(problems))


def _parameter_tensor(param: Any) -> Any:
    """The values of a parameter: its ZeRO-3 partition when partitioned."""
    return getattr(param, "ds_tensor", None) if hasattr(param, "ds_numel") else param


def _fingerprints(params: list[Any]) -> list[tuple[float, float]]:
    """(sum, sum of squares) of each tensor, in fp32: cheap, and moved by any update."""
    import torch

    out = []
    with torch.no_grad():
        for p in params:
            t = _parameter_tensor(p).detach().float()
            out.append((float(t.sum()), float(t.square().sum())))
            del t
    return out


def _count(model: Any) -> tuple[int, int, list[Any]]:
    """(total, trainable, trainable parameters), each unique parameter once, ZeRO-3 aware
    (recipes.train.modeling.count_parameters)."""
    from recipes.train.modeling import count_parameters

    trainable, total = count_parameters(model)
    return total, trainable, [p for p in model.parameters() if p.requires_grad]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_process_group(device: str) -> None:
    """torch.distributed with one rank (nccl on CUDA, gloo on CPU) for DeepSpeed.

    Made once per process and kept until exit: DeepSpeed caches the groups it derives from
    it, and after a destroy_process_group() the next deepspeed.initialize() fails with
    "Group ... is not registered" (measured, deepspeed 0.19). It is destroyed at exit (an
    undestroyed group occasionally aborts the interpreter at exit).
    """
    import atexit

    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() != 1:
            raise ValueError(
                f"real_training_step measures one process; this one is rank "
                f"{dist.get_rank()} of {dist.get_world_size()}"
            )
        return
    if "MASTER_PORT" not in os.environ:
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            LOCAL_WORLD_SIZE="1",
        )
    deepspeed.init_distributed(
        dist_backend="nccl" if device == "cuda" else "gloo",
        auto_mpi_discovery=False,
        verbose=False,
    )
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _nvml_handle(pynvml: Any, torch: Any) -> Any:
    """NVML's handle of torch's current device: by UUID (right under CUDA_VISIBLE_DEVICES
    or MIG), else by index."""
    index = torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        text = str(uuid)
        with contextlib.suppress(pynvml.NVMLError):
            return pynvml.nvmlDeviceGetHandleByUUID(
                text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"
            )
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def _nvml_used_bytes(torch: Any) -> tuple[int, str] | None:
    """(bytes, scope): this process's memory on the current GPU per NVML ("process"), else
    the whole GPU's used memory ("device": a container may hide our pid); None when NVML
    cannot tell. Never raises: a missing reading must not cost the row its measurement."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - any NVML failure: no reading
        return None
    try:
        handle = _nvml_handle(pynvml, torch)
        with contextlib.suppress(pynvml.NVMLError):
            pid = os.getpid()
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and isinstance(proc.usedGpuMemory, int):
                    return int(proc.usedGpuMemory), "process"
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used), "device"
    except pynvml.NVMLError:
        return None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _device_name(device: str) -> str:
    import platform

    if device == "cuda":
        import torch

        return str(torch.cuda.get_device_name())
    return platform.processor() or platform.machine()


def real_training_step(
    config: Mapping[str, Any],
    setup: Setup,
    *,
    device: Device = "cuda",
    learning_rate: float = 1e-4,
    iterations: int = 2,
    seed: int = 0,
    qlora_base_dir: Path | None = None,
) -> StepMeasurement:
    """Build the model of `config` (a transformers config dict with its model_type) with
    random weights, apply `setup`'s method, precision, checkpointing and ZeRO stage, and
    run `iterations` training iterations of `setup.micro_batch_size` × `setup.seq_len`
    tokens. ValueError for a setup this cannot run; NoCudaError for device "cuda" where
    there is none.

    `qlora_base_dir`: a folder that keeps the random 16-bit base of a QLoRA run between
    calls with the SAME config (saved on first use; a 7B model is ~13 GB of disk). Default:
    a temporary folder per call."""
    import torch

    _check(setup, device)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if device == "cuda" and not torch.cuda.is_available():
        raise NoCudaError("device cuda: torch sees no CUDA device on this machine")
    zero = setup.zero_stage or 0
    started = time.perf_counter()
    torch.manual_seed(seed)
    with contextlib.ExitStack() as stack:
        if zero:
            _ensure_process_group(device)
        model_dir = "bench"
        if setup.method == "qlora":
            if qlora_base_dir is not None:
                qlora_base_dir.mkdir(parents=True, exist_ok=True)
                model_dir = str(qlora_base_dir)
            else:
                model_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="tuneboard-q-"))
        measurement = _run(config, setup, device, model_dir, learning_rate, iterations)
    free_memory(device)
    return StepMeasurement(**measurement, elapsed_s=time.perf_counter() - started)


def _run(
    config: Mapping[str, Any],
    setup: Setup,
    device: str,
    model_dir: str,
    learning_rate: float,
    iterations: int,
) -> dict[str, Any]:
    import torch

    from recipes.train.runtime import RunContext

    zero = setup.zero_stage or 0
    recipe = bench_recipe(setup, config, model_dir)
    ctx = RunContext(
        rank=0,
        local_rank=0,
        world_size=1,
        local_world_size=1,
        cuda=device == "cuda",
        output_dir=Path(model_dir),
    )
    model = apply_method(recipe, ctx, build_model(recipe, ctx, config, device))
    vocab = int(model.get_input_embeddings().weight.shape[0])
    params = [p for p in model.parameters() if p.requires_grad]
    foreach, fused = _ADAMW_FLAGS[setup.optimizer]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, foreach=foreach, fused=fused)
    engine: Any = None
    if zero:
        import deepspeed

        hidden = int(hf_config(config).get_text_config().hidden_size)
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=bench_deepspeed_config(recipe, hidden)
        )
        model = engine.module
    total, trainable, params = _count(model)
    before = _fingerprints(params)

    run_device = engine.device if engine is not None else torch.device(device)
    ids = torch.arange(setup.micro_batch_size * setup.seq_len, device=run_device)
    ids = ids.remainder(vocab).view(setup.micro_batch_size, setup.seq_len)
    autocast = (
        torch.autocast(device_type=device, dtype=torch.bfloat16)
        if setup.precision == "bf16-mixed" and not zero
        else contextlib.nullcontext()
    )
    if device == "cuda":
        # Blocks cached while building (random init, fingerprints) are not the step's.
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    losses: list[float] = []
    try:
        for _ in range(iterations):
            if engine is not None:
                loss = engine(input_ids=ids, labels=ids, use_cache=False).loss
                engine.backward(loss)
                engine.step()  # steps the optimizer and zeroes the gradients
            else:
                with autocast:
                    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            del loss
        allocated = reserved = non_torch = None
        scope = None
        if device == "cuda":
            torch.cuda.synchronize()
            allocated = int(torch.cuda.max_memory_allocated())
            reserved = int(torch.cuda.max_memory_reserved())
            used = _nvml_used_bytes(torch)
            if used is not None:
                non_torch = max(0, used[0] - int(torch.cuda.memory_reserved()))
                scope = used[1]
        after = _fingerprints(params)
    finally:
        if engine is not None:
            engine.destroy()
    changed = sum(b != a for b, a in zip(before, after, strict=True))
    return {
        "device": device,
        "device_name": _device_name(device),
        "method": setup.method,
        "precision": setup.precision,
        "zero_stage": zero,
        "params_total": total,
        "params_trainable": trainable,
        "trainable_tensors": len(params),
        "trainable_tensors_changed": changed,
        "losses": tuple(losses),
        "allocated_peak_bytes": allocated,
        "reserved_peak_bytes": reserved,
        "non_torch_bytes": non_torch,
        "nvml_scope": scope,
    }


def measurement_dict(m: StepMeasurement) -> dict[str, Any]:
    """The measurement as JSON-ready data (with the derived process peak)."""
    import dataclasses

    out = dataclasses.asdict(m)
    out["losses"] = list(m.losses)
    out["process_peak_bytes"] = m.process_peak_bytes
    return out


def one_gpu_setup(
    method: Method,
    *,
    zero: int,
    ckpt: bool,
    micro_batch: int,
    seq_len: int,
    lora_rank: int,
    precision: Precision | None = None,
    lora_targets: str = "all-linear",
    optimizer: Optimizer = "adamw",
) -> Setup:
    """The Setup of a benchmark row: one GPU, torch AdamW (fused, as the recipes run it,
    unless `optimizer` says otherwise), no offload, global batch = micro
    batch, no LoRA dropout; pure bf16 without ZeRO, bf16-mixed under it (DeepSpeed's bf16)."""
    return Setup(
        method=method,
        precision=precision or ("bf16-mixed" if zero else "bf16-pure"),
        optimizer=optimizer,
        zero_stage=zero,
        fsdp=None,
        offload_optimizer="none",
        offload_params="none",
        gradient_checkpointing=ckpt,
        micro_batch_size=micro_batch,
        seq_len=seq_len,
        global_batch_size=micro_batch,
        lora_rank=lora_rank,
        lora_targets=lora_targets,
        lora_dropout=0.0,
    )
