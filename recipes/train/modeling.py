"""Model side of a run: tokenizer, base model (dtype, 4/8-bit), the method (LoRA, freeze), export.

Shared by every training family. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.schema.chat_templates import resolve_chat_template
from recipes.train.runtime import RunContext, log

if TYPE_CHECKING:
    from recipes.schema import PrecisionKind, Recipe

LORA_INIT: dict[str, Any] = {
    "default": True,
    "gaussian": "gaussian",
    "pissa": "pissa",
    "loftq": "loftq",
}


def model_path(recipe: Recipe, ctx: RunContext) -> str:
    """What from_pretrained loads: the tiny base folder, or model.name."""
    if recipe.model.tiny is not None:
        return str(ctx.output_dir / "tiny-base")
    return recipe.model.name


def load_tokenizer(recipe: Recipe, ctx: RunContext, needs_chat: bool) -> Any:
    """The tokenizer, with data.chat_template installed and a pad token guaranteed."""
    from transformers import AutoTokenizer

    source = recipe.model.tokenizer or model_path(recipe, ctx)
    tokenizer = AutoTokenizer.from_pretrained(
        source,
        revision=recipe.model.revision if recipe.model.tiny is None else None,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    template = resolve_chat_template(recipe.data.chat_template)
    if template is not None:
        tokenizer.chat_template = template
    if needs_chat and not tokenizer.chat_template:
        raise ValueError(
            f"data.format {recipe.data.format!r} needs a chat template and the tokenizer of "
            f"{source!r} has none: set data.chat_template (chatml, or a Jinja string)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_dtype(recipe: Recipe, precision: PrecisionKind) -> str:
    """The dtype the base weights are loaded in.

    Trainable full weights under *-mixed precision without DeepSpeed must be fp32: they are
    the master weights that AMP updates (bf16 weights under autocast would be bf16 training
    with no fp32 copy). DeepSpeed keeps its own fp32 master copy, so the recipe's
    model.dtype (bf16 by default) is loaded there. LoRA-family bases are frozen: model.dtype.
    """
    if precision == "fp32":
        return "float32"
    if precision == "bf16-pure":
        return "bfloat16"
    trains_base = recipe.method.kind in ("full", "freeze")
    if trains_base and not recipe.distributed.uses_deepspeed:
        return "float32"
    return recipe.model.dtype


def quantization_config(recipe: Recipe, precision: PrecisionKind) -> Any:
    """BitsAndBytesConfig for qlora (4-bit NF4/FP4, double quant; or 8-bit), else None."""
    method = recipe.method
    if method.kind != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.float32 if precision == "fp32" else torch.bfloat16
    if precision == "fp16-mixed":
        compute = torch.float16
    if method.quantization_bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
    sharded = recipe.distributed.zero_stage == 3 or recipe.distributed.fsdp is not None
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type=method.quantization_type,
        bnb_4bit_use_double_quant=method.double_quantization,
        bnb_4bit_compute_dtype=compute,
        # ZeRO-3/FSDP shard parameters of one dtype: store the 4-bit data in it.
        bnb_4bit_quant_storage=compute if sharded else torch.uint8,
    )


def load_model(
    recipe: Recipe,
    ctx: RunContext,
    precision: PrecisionKind,
    auto_class: Any = None,
    **extra: Any,
) -> Any:
    """The base model, on CPU (the Trainer/DeepSpeed place it), quantized for qlora.

    `auto_class`: AutoModelForCausalLM unless given; `extra`: more from_pretrained kwargs.
    """
    from transformers import AutoModelForCausalLM

    cls = auto_class or AutoModelForCausalLM
    quant = quantization_config(recipe, precision)
    kwargs: dict[str, Any] = {
        "dtype": load_dtype(recipe, precision),
        "attn_implementation": recipe.model.attn_implementation,
        "trust_remote_code": recipe.model.trust_remote_code,
        **extra,
    }
    if recipe.model.tiny is None:
        kwargs["revision"] = recipe.model.revision
    if quant is not None:
        kwargs["quantization_config"] = quant
        # bitsandbytes quantizes on the device it loads to: this rank's GPU (or the CPU).
        if ctx.cuda and not (recipe.distributed.zero_stage == 3 or recipe.distributed.fsdp):
            kwargs["device_map"] = {"": ctx.local_rank}
    model = cls.from_pretrained(model_path(recipe, ctx), **kwargs)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        layer = "Linear8bitLt" if recipe.method.quantization_bits == 8 else "Linear4bit"
        quantized = [m for m in model.modules() if type(m).__name__ == layer]
        stored = sorted({str(m.weight.dtype).removeprefix("torch.") for m in quantized})
        how = (
            "8-bit"
            if recipe.method.quantization_bits == 8
            else f"4-bit {recipe.method.quantization_type}"
            + (" (double quant)" if recipe.method.double_quantization else "")
        )
        log(
            ctx,
            f"qlora: base loaded in {how}, {len(quantized)} {layer} layers, "
            f"weights stored as {'/'.join(stored) or 'nothing'}",
        )

        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model,
            use_gradient_checkpointing=recipe.training.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    model.config.use_cache = False  # a KV cache is useless in training and costs memory
    return model


def check_machine_support(recipe: Recipe, ctx: RunContext) -> None:
    """Refuse, before any weight loads, what this machine's stack cannot run (measured).

    - distributed.fsdp without CUDA: accelerate (1.15) switches a run to FSDP only when its
      process group is on GPUs or other accelerators; on CPU it drops the FSDP plugin and wraps
      the model in plain DDP, so a CPU "FSDP" run would train unsharded while claiming FSDP.
    - lora.init loftq: PEFT 0.21's loftq_init moves every weight to "cuda" (or "xpu")
      unconditionally, so without a GPU it fails with "Torch not compiled with CUDA enabled"
      after the model has loaded; PEFT's LoraConfig also refuses it without scipy.
    """
    if recipe.distributed.fsdp is not None and not ctx.cuda:
        raise ValueError(
            "distributed.fsdp: FSDP through the Trainer does not shard on CPU (accelerate turns "
            "FSDP on only for GPU process groups and silently runs plain DDP on CPU); use "
            "zero_stage 0-3 on CPU"
        )
    if recipe.method.lora.init != "loftq" or recipe.method.kind not in ("lora", "dora"):
        return
    import importlib.util

    missing = []
    if not ctx.cuda:
        missing.append(
            "a CUDA GPU (PEFT's LoftQ initialisation computes on cuda only; this machine has none)"
        )
    if importlib.util.find_spec("scipy") is None:
        missing.append("scipy (pip install scipy)")
    if missing:
        raise ValueError(
            "method.lora.init loftq needs "
            + " and ".join(missing)
            + ": use lora.init default, gaussian or pissa here"
        )


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; under ZeRO-3 each is partitioned, ds_numel is its size."""
    trainable = total = 0
    for param in model.parameters():
        n = int(getattr(param, "ds_numel", param.numel()))
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total


def lora_config(recipe: Recipe, task_type: str = "CAUSAL_LM") -> Any:
    """PEFT LoraConfig for lora/qlora/dora, else None."""
    method = recipe.method
    if method.kind not in ("lora", "qlora", "dora"):
        return None
    from peft import LoftQConfig, LoraConfig

    lora = method.lora
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
        use_dora=method.kind == "dora",
        init_lora_weights=LORA_INIT[lora.init],
        loftq_config=LoftQConfig(loftq_bits=4) if lora.init == "loftq" else {},
        modules_to_save=list(lora.modules_to_save) or None,
        task_type=task_type,
    )


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def check_pissa_targets(model: Any) -> None:
    """Refuse PiSSA on a PEFT model whose adapter wraps an embedding (before any training).

    PEFT (0.21) has no PiSSA for nn.Embedding: such a layer silently gets the default init
    and an unchanged base, and its lora_embedding_A/B cannot be converted to a LoRA on the
    original weights at the end. modules_to_save (a whole trained copy) is fine.
    """
    hits = [
        name.removeprefix("base_model.model.")
        for name, module in model.named_modules()
        if len(getattr(module, "lora_embedding_A", None) or ()) > 0
    ]
    if hits:
        raise ValueError(
            f"lora.init pissa cannot adapt an embedding: lora.target_modules hits "
            f"{', '.join(hits)} (nn.Embedding); drop it from target_modules (train it in full "
            "with lora.modules_to_save instead) or use lora.init default/gaussian"
        )


def _write_atomically(path: Path, write: Any) -> None:
    """write(tmp) to a temporary file beside `path`, flush it to disk, then os.replace it in:
    a reader (or a crash) sees the old file or the new one, never a half-written one."""
    import os

    # Same directory (os.replace is atomic within one filesystem); created with the usual
    # umask permissions, unlike mkstemp's 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def convert_pissa_adapter(adapter_dir: Path, initial_dir: Path) -> None:
    """Rewrite a trained PiSSA adapter (in place) as a plain LoRA on the original base weights.

    PiSSA starts from W = W_res + s·B0·A0 and trains B, A over the residual W_res, so the
    trained layer is W_res + s·B·A = W + s·(B·A - B0·A0) = W + s·[B, -B0]·[A; A0]: a LoRA of
    rank 2r with the same scale s (alpha doubles with the rank; with rsLoRA, alpha·√2). This is
    PEFT's `path_initial_model_for_weight_conversion`, done on the saved files: the in-memory
    adapter is partitioned under ZeRO-3 at save time (measured: PEFT's in-memory conversion
    then writes rank-r tensors under a rank-2r config), the files are whole.

    Each file is replaced atomically, the weights first and the config last.
    """
    import torch
    from safetensors.torch import load_file, save_file

    trained = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    initial = load_file(str(initial_dir / ADAPTER_WEIGHTS))
    converted: dict[str, Any] = {}
    for key, value in trained.items():
        if ".lora_A." in key:
            converted[key] = torch.cat([value, initial[key].to(value.dtype)], dim=0)
        elif ".lora_B." in key:
            converted[key] = torch.cat([value, -initial[key].to(value.dtype)], dim=1)
        elif ".lora_" in key:  # lora_embedding_*, lora_magnitude_vector: not a B·A product
            raise ValueError(f"lora.init pissa: cannot convert adapter weight {key}")
        else:
            converted[key] = value  # modules_to_save: whole modules, nothing to subtract
    config_file = adapter_dir / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["r"] = 2 * config["r"]
    config["lora_alpha"] = config["lora_alpha"] * (2**0.5 if config.get("use_rslora") else 2)
    config["init_lora_weights"] = True  # loading it must not run PiSSA's SVD again

    _write_atomically(
        adapter_dir / ADAPTER_WEIGHTS,
        lambda tmp: save_file(converted, str(tmp), metadata={"format": "pt"}),
    )
    text = json.dumps(config, indent=2, sort_keys=True)
    _write_atomically(config_file, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _decoder_layers(model: Any) -> tuple[str, int]:
    """(name prefix, count) of the decoder's layer list: the ModuleList of num_hidden_layers."""
    import torch

    text_config = model.config.get_text_config()
    count = int(text_config.num_hidden_layers)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return name, count
    raise ValueError(f"method freeze: found no list of {count} decoder layers in the model")


def apply_freeze(recipe: Recipe, model: Any, ctx: RunContext) -> int:
    """method freeze: train only some decoder layers (and extra modules). Returns trainable params.

    Same semantics as LLaMA-Factory's freeze tuning: the last N layers (first |N| if N < 0),
    inside them the listed modules (or all), plus freeze_extra_modules anywhere.
    """
    method = recipe.method
    prefix, count = _decoder_layers(model)
    n = method.freeze_trainable_layers
    if abs(n) > count:
        raise ValueError(f"method.freeze_trainable_layers {n}: the model has {count} layers")
    layer_ids = range(count - n, count) if n > 0 else range(0, -n)
    layer_prefixes = tuple(f"{prefix}.{i}." for i in layer_ids)
    modules = method.freeze_trainable_modules
    extra = set(method.freeze_extra_modules)
    trainable = 0
    for name, param in model.named_parameters():
        in_layer = name.startswith(layer_prefixes)
        picked = modules == "all" or any(f".{m}." in name for m in modules)
        wanted = (in_layer and picked) or bool(extra & set(name.split(".")))
        param.requires_grad_(wanted)
        trainable += param.numel() if wanted else 0
    if trainable == 0:
        raise ValueError(
            f"method freeze trains nothing: no parameter of layers {list(layer_ids)} matches "
            f"freeze_trainable_modules {modules}"
        )
    if recipe.training.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: checkpointed layers need a grad
    log(ctx, f"freeze: training layers {list(layer_ids)} ({trainable:,} parameters)")
    return trainable


def export_merged(recipe: Recipe, ctx: RunContext, adapter_dir: Path, out_dir: Path) -> Path:
    """Merge the trained adapter into unquantized base weights (model.dtype) and save them."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if recipe.distributed.uses_deepspeed:
        # Training is over and this runs on one rank: with the Trainer's ZeRO-3 config still
        # registered, from_pretrained would partition the weights with zero.Init, collectives
        # the other ranks (at the barrier) never join. Measured: a hang in phase saving.
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # type: ignore[no-untyped-call]
    dtype = "float32" if recipe.model.tiny is not None else recipe.model.dtype
    extra: dict[str, Any] = {}
    cls: Any = AutoModelForCausalLM
    if recipe.task.kind == "reward":  # a reward model merges into its scoring head's class
        cls, extra = AutoModelForSequenceClassification, {"num_labels": 1}
    base = cls.from_pretrained(
        model_path(recipe, ctx),
        dtype=dtype,
        trust_remote_code=recipe.model.trust_remote_code,
        **extra,
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out_dir)
    return out_dir
