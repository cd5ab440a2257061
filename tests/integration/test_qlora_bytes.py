"""QLoRA weights as the recipes really load them, byte for byte, against the planner.

The model is loaded the way a run loads it (recipes.train.modeling.load_model:
bitsandbytes NF4 with double quantization while from_pretrained loads, then PEFT's
prepare_model_for_kbit_training), on CPU, and every byte it holds is counted: the
4-bit data of each Linear4bit, its quantization state (absmax, the nested absmax,
the code tables), and every other parameter and buffer.

What this pins for MoE (measured with transformers 5.25 and bitsandbytes 0.50): the
experts are fused 3D `nn.Parameter`s, which bitsandbytes' linear replacement does not
touch, so they load in bf16 and prepare_model_for_kbit_training casts them to fp32
like the norms and embeddings: 4 bytes per expert weight, as the planner counts them
(planner/memory/model_states.py, QLORA_UNQUANTIZED_BYTES). Published Mixtral QLoRA
peaks made with transformers 4.x, where the experts were nn.Linear and quantized, are
several times lower; with the stack the recipes install, this is what a run holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from planner.hf_config import spec_from_hf_config
from planner.memory.model_states import base_weight_bytes_per_param
from tests.support.real_step import one_gpu_setup

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")
pytest.importorskip("peft")

LLAMA = {
    "model_type": "llama",
    "hidden_size": 512,
    "intermediate_size": 1024,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 2000,
    "tie_word_embeddings": False,
}
MIXTRAL = {
    "model_type": "mixtral",
    "hidden_size": 512,
    "intermediate_size": 1024,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 2000,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
}


def _tensors_of(state: Any) -> list[Any]:
    """Every tensor of a bitsandbytes QuantState, the nested one included."""
    if state is None:
        return []
    found = [
        getattr(state, name)
        for name in ("absmax", "code", "offset")
        if isinstance(getattr(state, name, None), torch.Tensor)
    ]
    return found + _tensors_of(getattr(state, "state2", None))


def _held_bytes(model: Any) -> tuple[int, dict[str, int]]:
    """(all bytes, bytes per dtype) of the parameters, their quantization states and buffers."""
    total = 0
    per_dtype: dict[str, int] = {}
    for param in model.parameters():
        size = param.numel() * param.element_size()
        per_dtype[str(param.dtype)] = per_dtype.get(str(param.dtype), 0) + size
        total += size
        total += sum(
            t.numel() * t.element_size() for t in _tensors_of(getattr(param, "quant_state", None))
        )
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    return total, per_dtype


@pytest.mark.parametrize("config", [LLAMA, MIXTRAL], ids=["llama", "mixtral"])
def test_qlora_weights_as_loaded_are_what_the_planner_counts(
    config: dict[str, Any], tmp_path: Path
) -> None:
    from recipes.train.runtime import RunContext
    from tests.support.real_step_model import bench_recipe, build_model

    setup = one_gpu_setup("qlora", zero=0, ckpt=True, micro_batch=1, seq_len=128, lora_rank=8)
    recipe = bench_recipe(setup, config, model_name=str(tmp_path / "base"))
    ctx = RunContext(
        rank=0, local_rank=0, world_size=1, local_world_size=1, cuda=False, output_dir=tmp_path
    )
    model = build_model(recipe, ctx, config, "cpu")
    held, per_dtype = _held_bytes(model)

    spec = spec_from_hf_config(config, name="tiny", source="config")
    planned = spec.params_total * base_weight_bytes_per_param(spec, setup)
    # NF4 + double quantization per weight, fp32 for the rest; the code tables
    # (2 × 256 fp32 per quantized tensor) are a constant the planner leaves out
    print(f"held {held} B, planned {planned:.0f} B ({planned / held - 1:+.2%})")
    assert held == pytest.approx(planned, rel=0.01), per_dtype
    assert "torch.bfloat16" not in per_dtype  # prepare_model_for_kbit_training upcast it all
    if config is MIXTRAL:
        experts = sum(
            p.numel() * p.element_size() for n, p in model.named_parameters() if "experts" in n
        )
        assert experts > held / 2  # the unquantized fp32 experts are most of the model
        assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "experts" in n)
