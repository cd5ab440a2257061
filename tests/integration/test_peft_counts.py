"""The planner's trainable-parameter counts and QLoRA weight bytes against PEFT and
bitsandbytes themselves (models built from configs: meta device, or tiny on CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from planner.hf_config import spec_from_hf_config
from planner.layers import adapter_params, trainable_params
from planner.memory.model_states import base_weight_bytes_per_param
from planner.model_catalog import find_catalog_entry
from planner.setups import Method, Setup

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def _setup(method: Method, rank: int = 16, targets: str = "all-linear") -> Setup:
    return Setup(
        method=method,
        precision="bf16-mixed",
        optimizer="adamw",
        zero_stage=0,
        fsdp=None,
        offload_optimizer="none",
        offload_params="none",
        gradient_checkpointing=False,
        micro_batch_size=1,
        seq_len=128,
        lora_rank=rank,
        lora_targets=targets,
    )


def _meta_model(config: dict[str, Any]) -> Any:
    cfg = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(cfg)


def _peft_trainable(model: Any, targets: Any, rank: int, dora: bool = False) -> int:
    lora = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, use_dora=dora)
    wrapped = peft.get_peft_model(model, lora)
    trainable, _ = wrapped.get_nb_trainable_parameters()
    return int(trainable)


@pytest.mark.parametrize(
    ("name", "targets", "peft_targets"),
    [
        ("qwen2.5-0.5b", "all-linear", "all-linear"),
        ("llama-2-7b", "all-linear", "all-linear"),
        ("llama-2-7b", "q_proj,v_proj", ["q_proj", "v_proj"]),
        ("mistral-7b-v0.1", "attention", ["q_proj", "k_proj", "v_proj", "o_proj"]),
        ("opt-1.3b", "all-linear", "all-linear"),
        ("bloom-7b1", "all-linear", "all-linear"),
        ("glm-4-9b", "all-linear", "all-linear"),
        ("mixtral-8x7b", "all-linear", "all-linear"),
    ],
)
def test_lora_counts_match_peft(name: str, targets: str, peft_targets: Any) -> None:
    entry = find_catalog_entry(name)
    assert entry is not None
    spec = spec_from_hf_config(entry.config_dict(), name=name, source="catalog")
    ours = adapter_params(spec, _setup("lora", 16, targets))
    theirs = _peft_trainable(_meta_model(entry.config_dict()), peft_targets, 16)
    assert ours == theirs


def test_dora_counts_match_peft() -> None:
    entry = find_catalog_entry("qwen2.5-0.5b")
    assert entry is not None
    spec = spec_from_hf_config(entry.config_dict(), name="q", source="catalog")
    ours = adapter_params(spec, _setup("dora", 8))
    theirs = _peft_trainable(_meta_model(entry.config_dict()), "all-linear", 8, dora=True)
    assert ours == theirs


def test_freeze_trains_the_last_two_layers() -> None:
    entry = find_catalog_entry("llama-2-7b")
    assert entry is not None
    model = _meta_model(entry.config_dict())
    last_two = sum(p.numel() for layer in model.model.layers[-2:] for p in layer.parameters())
    spec = spec_from_hf_config(entry.config_dict(), name="l", source="catalog")
    assert trainable_params(spec, _setup("freeze")) == last_two


def _storage_bytes(model: Any) -> int:
    """Bytes of every parameter and bitsandbytes quantization state, each storage once."""
    seen: set[int] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if t is None:
            return
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()

    for p in model.parameters():
        add(p.data)
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            add(qs.absmax)
            if qs.nested:
                add(qs.state2.absmax)
    return total


def test_qlora_weight_bytes_match_bitsandbytes(tmp_path: Path) -> None:
    """NF4 + double quant ≈ 0.516 B per quantized weight; everything else fp32 after
    prepare_model_for_kbit_training. Checked on a real 4-bit load on CPU."""
    pytest.importorskip("bitsandbytes")
    config = {
        "model_type": "llama",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "vocab_size": 2048,
        "tie_word_embeddings": False,
    }
    cfg = transformers.AutoConfig.for_model(**config)
    transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(
        tmp_path
    )
    bnb = transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, quantization_config=bnb, dtype=torch.bfloat16, device_map="cpu"
    )
    model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    spec = spec_from_hf_config(config, name="tiny", source="config")
    expected = spec.params_total * base_weight_bytes_per_param(spec, _setup("qlora"))
    measured = _storage_bytes(model)
    assert measured == pytest.approx(expected, rel=0.01)
