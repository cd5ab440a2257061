"""Measure the memory of a training step without a GPU: trace it on fake tensors.

`trace_training_step` builds a Hugging Face causal LM from a config dict, applies the
training method (full, freeze, LoRA, DoRA), and runs two real training iterations
(forward with labels, backward, optimizer step, zero_grad) on *fake* CPU tensors: every
aten op runs its shape/dtype logic but allocates no data. A `TorchDispatchMode` watches
every op's outputs and keeps the bytes of the storages that are alive at each instant
(each storage once, however many views point at it; it is subtracted when the storage
dies). The result is the live-bytes profile a caching allocator would see, without its
rounding and fragmentation: a Llama-2-7B at seq 2048 traces in about 8 s (full) to 15 s
(LoRA) on 2 CPU cores, in under 0.5 GB of RSS.

How it is done, and why:

* The model is built on the ``meta`` device, and PEFT's `get_peft_model` is applied on
  meta too (it fails on fake tensors). Only then are parameters and buffers materialised
  as fake CPU tensors, inside the counting mode, so that their bytes are counted (tied
  weights stay tied: one new tensor per distinct parameter).
* Fake tensors live on ``cpu``: fake ``cuda`` cannot run backward on a machine without a
  GPU, and fake ``meta`` takes SDPA's math path (an eager-like attention matrix). CPU SDPA
  takes its flash kernel, whose saved tensors (output + fp32 logsumexp) match the GPU
  flash/memory-efficient kernels.
* Where the CPU path allocates differently from CUDA, the trace takes the CUDA path:
  dropout runs ``native_dropout`` (bool mask; CPU would keep a mask in the input's dtype),
  see `_gpu_like_dropout`.
* Sequences are full and unpacked, with no attention mask (what a packing-free,
  padding-free batch gives): SDPA then runs with ``is_causal`` and, for GQA, transformers
  passes ``enable_gqa=True`` instead of materialising ``repeat_kv`` copies. On fake
  tensors transformers cannot read the position ids to see that the batch is not packed
  and would build a 4-D mask; `_unpacked_sequences` tells it so.
* Inputs are made with ``torch.zeros``/``arange`` (RNG ops such as ``randint`` fail on fake
  tensors).
* What the trace cannot see: memory a kernel allocates internally (cuBLAS workspaces,
  flash-attention backward's fp32 ``dq`` accumulator), the CUDA context, NCCL buffers,
  and the caching allocator's rounding and fragmentation (a real process grew ~15% above
  the live bytes on CPU). Those are for the caller to add.
* Training is "pure": weights in ``dtype``, no autocast, no master weights; LoRA/DoRA
  adapters keep PEFT's default ``autocast_adapter_dtype=True``, i.e. they are fp32 on a
  bf16 base model, and PEFT casts the layer input to fp32 before the adapter
  (`_cast_input_dtype`), which shows up in the activations.
* ``optimizer="adamw"`` is ``torch.optim.AdamW(foreach=False, fused=False)``, the
  single-tensor path: its step makes two temporaries the size of the parameter being
  updated (``sqrt`` and ``div`` of ``exp_avg_sq``) while the previous parameter's
  ``denom`` is still bound to the loop variable, so its transient is
  ``max_i(2 * bytes(p_i) + bytes(p_{i-1}))`` in ``model.parameters()`` order (about 2x the
  largest parameter, usually the embedding), whatever the number of parameters. It is
  the default because it runs the same on every torch the project supports and on fake
  and real CPU tensors alike, and because its transient is small and easy to model; the
  state (``exp_avg``, ``exp_avg_sq`` in the parameter dtype, a 4-byte ``step`` per tensor)
  is the same for every AdamW path. ``"adamw_foreach"`` (torch's default on CUDA when
  neither flag is given) makes the ``sqrt`` of the whole group's ``exp_avg_sq`` at once:
  +1x the trainable parameter bytes at the step. ``"adamw_fused"`` (transformers'
  ``Trainer`` default, ``optim="adamw_torch_fused"``, on torch >= 2.8) makes no
  temporaries.
* Two iterations run, because the optimizer state appears in the first step: the second
  iteration is the steady state, and its phases are what `phase_peak_bytes` reports.
* The forward output is dropped right after the loss is taken (as `transformers.Trainer`
  does), so the bf16 logits do not outlive the forward; ``use_cache=False``.

Importing this module costs nothing: torch, transformers and peft are imported inside the
functions that need them.
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from planner.live_bytes import LiveBytesCounter

if TYPE_CHECKING:
    import torch

__all__ = [
    "METHODS",
    "OPTIMIZERS",
    "PHASES",
    "TraceResult",
    "trace_training_step",
]

METHODS = ("full", "freeze", "lora", "dora")
OPTIMIZERS = ("adamw", "adamw_foreach", "adamw_fused", "sgd")
PHASES = ("forward", "backward", "optimizer")
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_ITERATIONS = 2


@dataclass(frozen=True)
class TraceResult:
    """Live storage bytes of a traced training step (all sizes in bytes).

    ``peak_bytes`` is over the whole run (materialisation and both iterations);
    ``phase_peak_bytes`` maps "forward" (forward and loss), "backward" and "optimizer"
    (step and zero_grad) to the highest live bytes seen in that phase of the second,
    steady-state iteration.
    """

    peak_bytes: int
    phase_peak_bytes: dict[str, int]
    weights_bytes: int  # live bytes after building and applying the method, before any step
    gradients_bytes: int  # .grad of the trainable parameters after backward
    optimizer_bytes: int  # optimizer state after the step
    activations_peak_bytes: int  # forward peak minus live bytes just before the forward (iter 2)
    params_total: int
    params_trainable: int
    elapsed_s: float


# ----------------------------------------------------------------------------------------
# model construction
# ----------------------------------------------------------------------------------------
def _torch_dtype(dtype: str) -> torch.dtype:
    import torch

    try:
        value = getattr(torch, _DTYPES[dtype])
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}") from None
    assert isinstance(value, torch.dtype)
    return value


def _build_on_meta(
    config: Mapping[str, Any], dtype: torch.dtype, attn_implementation: str
) -> torch.nn.Module:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = dict(config)
    model_type = cfg_dict.pop("model_type", None)
    if model_type is None:
        raise ValueError("config needs a 'model_type' (e.g. 'llama')")
    cfg = AutoConfig.for_model(model_type, **cfg_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            cfg, dtype=dtype, attn_implementation=attn_implementation
        )
    assert isinstance(model, torch.nn.Module)
    return model


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The repeated decoder blocks: the longest ModuleList in the model."""
    import torch

    best: torch.nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and (best is None or len(module) > len(best)):
            best = module
    if best is None or len(best) == 0:
        raise ValueError("cannot find the decoder layers (no nn.ModuleList in the model)")
    return best


def _enable_checkpointing(model: torch.nn.Module) -> None:
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # type: ignore[operator]
    # transformers' Trainer/TRL do this for PEFT + checkpointing (HF 5 already does it).
    enable_grads = getattr(model, "enable_input_require_grads", None)
    if enable_grads is not None and not getattr(model, "_require_grads_hook", None):
        enable_grads()


def _apply_method(
    model: torch.nn.Module,
    method: str,
    *,
    lora_rank: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_targets: Sequence[str] | str,
    freeze_trainable_layers: int,
) -> torch.nn.Module:
    import torch

    if method == "full":
        return model
    if method == "freeze":
        layers = _decoder_layers(model)
        if not 0 < freeze_trainable_layers <= len(layers):
            raise ValueError(
                f"freeze_trainable_layers must be in 1..{len(layers)},"
                f" not {freeze_trainable_layers}"
            )
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in list(layers)[-freeze_trainable_layers:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        return model
    if method in ("lora", "dora"):
        from peft import LoraConfig, get_peft_model

        targets: str | list[str] = (
            lora_targets if isinstance(lora_targets, str) else list(lora_targets)
        )
        peft_config = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=targets,
            use_dora=method == "dora",
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, peft_config)
        assert isinstance(peft_model, torch.nn.Module)
        return peft_model
    raise ValueError(f"method must be one of {METHODS}, not {method!r}")


def _materialize(model: torch.nn.Module, *, fake: bool) -> None:
    """Replace every meta parameter and buffer with an empty CPU tensor.

    Like ``model.to_empty(device="cpu")`` but keeps tied parameters tied (to_empty makes a
    new tensor per module that holds the shared one).
    """
    import torch

    keep_alive: list[torch.Tensor] = []
    new_params: dict[int, torch.nn.Parameter] = {}
    new_buffers: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            replacement = new_params.get(id(param))
            if replacement is None:
                keep_alive.append(param)
                data = torch.empty(param.shape, dtype=param.dtype, device="cpu")
                if not fake:
                    with torch.no_grad():
                        data.normal_(0.0, 0.02)
                replacement = torch.nn.Parameter(data, requires_grad=param.requires_grad)
                new_params[id(param)] = replacement
            module._parameters[name] = replacement
        for name, buf in list(module._buffers.items()):
            if buf is None:
                continue
            new_buf = new_buffers.get(id(buf))
            if new_buf is None:
                keep_alive.append(buf)
                new_buf = torch.zeros(buf.shape, dtype=buf.dtype, device="cpu")
                new_buffers[id(buf)] = new_buf
            module._buffers[name] = new_buf


def _make_optimizer(params: list[torch.nn.Parameter], optimizer: str) -> torch.optim.Optimizer:
    import torch

    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, foreach=False, fused=False)
    if optimizer == "adamw_fused":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    if optimizer == "adamw_foreach":
        return torch.optim.AdamW(params, lr=1e-4, foreach=True, fused=False)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=1e-4, foreach=False)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")


def _optimizer_state_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    import torch

    return [
        value
        for state in opt.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    ]


# ----------------------------------------------------------------------------------------
# the trace
# ----------------------------------------------------------------------------------------
def trace_training_step(
    config: Mapping[str, Any],
    *,
    method: str = "full",
    dtype: str = "bf16",
    seq_len: int,
    micro_batch: int,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
    lora_rank: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    lora_targets: Sequence[str] | str = "all-linear",
    freeze_trainable_layers: int = 2,
    optimizer: str = "adamw",
    qlora: bool = False,
    autocast: bool = False,
    fake: bool = True,
    warm_start: bool = False,
    on_step: Callable[[LiveBytesCounter, str], None] | None = None,
) -> TraceResult:
    """Trace two training iterations of the model described by ``config``.

    ``config`` is a transformers config as a dict, with its ``model_type``. ``method``:
    "full" trains everything; "freeze" trains only the last ``freeze_trainable_layers``
    decoder layers; "lora"/"dora" apply PEFT with the given rank, alpha, dropout and target
    modules (adapters fp32 as PEFT makes them). ``dtype`` is the weights' dtype (no
    autocast, unless ``autocast=True``: the forward then runs under ``torch.autocast`` in
    ``dtype``, as the Trainer's bf16/fp16 mixed precision does). ``qlora=True`` (lora/dora
    only) makes the model behave as the recipes' QLoRA model does, fp32 residual stream
    included (planner/qlora_emulation.py). ``fake=False`` runs the same steps on real CPU
    tensors (slow; for validating the counter on small models). ``on_step(counter,
    label)`` is called at each phase boundary, for inspection. ``warm_start=True``
    replaces the first iteration by an optimizer step on zero gradients (it only has to
    create the optimizer state), then traces the steady-state iteration: the same peaks
    at about half the time.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    if qlora and method not in ("lora", "dora"):
        raise ValueError(f"qlora=True needs method lora or dora, not {method!r}")
    if seq_len < 2 or micro_batch < 1:
        raise ValueError("seq_len must be >= 2 and micro_batch >= 1")
    started = time.perf_counter()
    torch_dtype = _torch_dtype(dtype)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames, seen via PEFT
        model = _build_on_meta(config, torch_dtype, attn_implementation)
        if gradient_checkpointing:
            _enable_checkpointing(model)
        model = _apply_method(
            model,
            method,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_targets=lora_targets,
            freeze_trainable_layers=freeze_trainable_layers,
        )
        if qlora:
            from planner.qlora_emulation import emulate_qlora

            emulate_qlora(model)
    model.train()
    vocab_size = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[operator]

    unique: dict[int, torch.nn.Parameter] = {id(p): p for p in model.parameters()}
    params_total = sum(p.numel() for p in unique.values())
    params_trainable = sum(p.numel() for p in unique.values() if p.requires_grad)

    counter = LiveBytesCounter()
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None

    def mark(phase: str, label: str) -> None:
        counter.set_phase(phase)
        if on_step is not None:
            on_step(counter, label)

    gc.collect()
    gc_was_enabled = gc.isenabled()
    # Storages die when their refcounts say so; a collection in mid-trace would free
    # cyclic garbage at an arbitrary op and make the profile depend on the collector.
    gc.disable()
    try:
        with _unpacked_sequences(), _gpu_like_dropout(), _maybe(fake_mode), counter.active():
            counter.set_phase("materialize")
            _materialize(model, fake=fake)
            weights_bytes = counter.live
            trainable = [p for p in model.parameters() if p.requires_grad]

            counter.set_phase("setup")
            input_ids = (
                torch.arange(micro_batch * seq_len, dtype=torch.long)
                .remainder(vocab_size)
                .view(micro_batch, seq_len)
            )
            labels = input_ids.clone()
            opt = _make_optimizer(trainable, optimizer)

            gradients_bytes = 0
            optimizer_bytes = 0
            activations_peak = 0
            iteration_phase: dict[str, int] = {}
            first = 0
            if warm_start:
                counter.set_phase("warmup")
                for p in trainable:
                    p.grad = torch.zeros_like(p)
                opt.step()
                opt.zero_grad(set_to_none=True)
                first = _ITERATIONS - 1
            for it in range(first, _ITERATIONS):
                mark(f"forward.{it}", f"iter{it}:forward")
                before_forward = counter.live
                with torch.autocast("cpu", dtype=torch_dtype, enabled=autocast):
                    out = model(input_ids=input_ids, labels=labels, use_cache=False)
                    loss = out.loss
                    del out  # drop the logits, as Trainer.compute_loss does
                mark(f"backward.{it}", f"iter{it}:backward")
                loss.backward()  # outside autocast, as accelerate runs it
                del loss
                gradients_bytes = counter.storage_bytes(
                    [p.grad for p in trainable if p.grad is not None]
                )
                mark(f"optimizer.{it}", f"iter{it}:optimizer")
                opt.step()
                optimizer_bytes = counter.storage_bytes(_optimizer_state_tensors(opt))
                opt.zero_grad(set_to_none=True)
                mark("teardown", f"iter{it}:done")
                if it == _ITERATIONS - 1:
                    activations_peak = counter.phase_peak[f"forward.{it}"] - before_forward
                    iteration_phase = {
                        phase: counter.phase_peak[f"{phase}.{it}"] for phase in PHASES
                    }
            counter.finish()
            del opt, input_ids, labels, trainable
    finally:
        if gc_was_enabled:
            gc.enable()

    return TraceResult(
        peak_bytes=counter.peak,
        phase_peak_bytes=iteration_phase,
        weights_bytes=weights_bytes,
        gradients_bytes=gradients_bytes,
        optimizer_bytes=optimizer_bytes,
        activations_peak_bytes=activations_peak,
        params_total=params_total,
        params_trainable=params_trainable,
        elapsed_s=time.perf_counter() - started,
    )


@contextmanager
def _unpacked_sequences() -> Iterator[None]:
    """Let transformers see that the batch is not packed, on fake tensors too.

    With no attention mask, transformers checks the position ids for packed sequences,
    reading their values; on fake tensors it cannot, assumes packing and materialises a
    (batch, 1, seq, seq) mask, which also turns GQA into repeat_kv copies in SDPA. Our
    inputs are never packed, so the check runs (same temporaries) and then says "no".
    """
    from transformers import masking_utils

    original = getattr(masking_utils, "find_packed_sequence_indices", None)
    if original is None:
        yield
        return

    def not_packed(position_ids: torch.Tensor) -> None:
        original(position_ids)

    masking_utils.find_packed_sequence_indices = not_packed
    try:
        yield
    finally:
        masking_utils.find_packed_sequence_indices = original


@contextmanager
def _gpu_like_dropout() -> Iterator[None]:
    """Make dropout allocate what it allocates on a GPU.

    On CUDA, ``F.dropout`` runs the fused ``native_dropout`` and saves a bool mask (1 byte
    per element); on CPU it draws a mask in the input's dtype (e.g. 4 bytes per element
    for PEFT's fp32 adapter input) and multiplies. The trace takes the CUDA path.
    """
    import torch
    import torch.nn.functional as F

    original = F.dropout

    def dropout(
        input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
    ) -> torch.Tensor:
        if training and not inplace and 0.0 < p < 1.0 and input.numel() > 0:
            return torch.native_dropout(input, p, True)[0]
        return original(input, p, training, inplace)

    F.dropout = dropout
    try:
        yield
    finally:
        F.dropout = original


@contextmanager
def _maybe(mode: Any) -> Iterator[None]:
    if mode is None:
        yield
    else:
        with mode:
            yield
