"""The fake-tensor trace of planner.trace against the same steps on real CPU tensors.

The counter is the same `TorchDispatchMode` in both runs; what is checked is that fake
tensors take the same code paths and allocate the same storages as real ones (so the
planner's numbers are those of a real run, minus allocator rounding), that weights and
parameter counts are exact, and that LoRA's trainable count is PEFT's own.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from planner.trace import TraceResult, trace_training_step  # noqa: E402

SMALL_LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 1000,
    "max_position_embeddings": 256,
}
SEQ, BATCH = 128, 2


def _both(config: dict[str, Any], **kwargs: Any) -> tuple[TraceResult, TraceResult]:
    fake = trace_training_step(config, seq_len=SEQ, micro_batch=BATCH, fake=True, **kwargs)
    real = trace_training_step(config, seq_len=SEQ, micro_batch=BATCH, fake=False, **kwargs)
    return fake, real


def _assert_same(fake: TraceResult, real: TraceResult) -> None:
    assert fake.peak_bytes == pytest.approx(real.peak_bytes, rel=0.01)
    for phase in ("forward", "backward", "optimizer"):
        assert fake.phase_peak_bytes[phase] == pytest.approx(
            real.phase_peak_bytes[phase], rel=0.01
        ), phase
    assert fake.weights_bytes == real.weights_bytes
    assert fake.gradients_bytes == real.gradients_bytes
    assert fake.optimizer_bytes == real.optimizer_bytes
    assert fake.activations_peak_bytes == pytest.approx(real.activations_peak_bytes, rel=0.01)


def _meta_model(config: dict[str, Any], dtype: Any) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = dict(config)
    cfg = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype)


def _buffer_bytes(model: Any) -> int:
    return sum(b.numel() * b.element_size() for b in model.buffers())


@pytest.mark.parametrize(
    ("label", "overrides", "kwargs"),
    [
        ("full-sdpa", {}, {"method": "full"}),
        ("full-gqa-eager", {"num_key_value_heads": 2}, {"attn_implementation": "eager"}),
        ("full-gqa-sdpa-ckpt", {"num_key_value_heads": 2}, {"gradient_checkpointing": True}),
        ("lora-dropout", {}, {"method": "lora", "lora_dropout": 0.05}),
        ("freeze-fp32", {}, {"method": "freeze", "freeze_trainable_layers": 1, "dtype": "fp32"}),
    ],
)
def test_fake_trace_matches_real_tensors(
    label: str, overrides: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    config = {**SMALL_LLAMA, **overrides}
    fake, real = _both(config, **kwargs)
    _assert_same(fake, real)
    assert fake.params_total == real.params_total
    assert fake.params_trainable == real.params_trainable


def test_weights_gradients_and_optimizer_bytes_are_exact() -> None:
    result = trace_training_step(SMALL_LLAMA, seq_len=SEQ, micro_batch=BATCH)
    model = _meta_model(SMALL_LLAMA, torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    n_tensors = len(list(model.parameters()))
    assert result.params_total == result.params_trainable == n_params
    # bf16 weights, plus the (fp32) non-persistent buffers such as rotary inv_freq
    assert result.weights_bytes == 2 * n_params + _buffer_bytes(model)
    assert result.gradients_bytes == 2 * n_params
    # AdamW: exp_avg + exp_avg_sq in the weights' dtype, one fp32 `step` per tensor
    assert result.optimizer_bytes == 4 * n_params + 4 * n_tensors
    forward = result.phase_peak_bytes["forward"]
    assert result.activations_peak_bytes > 0
    assert result.peak_bytes >= max(result.phase_peak_bytes.values())
    assert forward >= result.weights_bytes + result.optimizer_bytes


def test_tied_embeddings_counted_once() -> None:
    tied = {**SMALL_LLAMA, "tie_word_embeddings": True}
    result = trace_training_step(tied, seq_len=SEQ, micro_batch=BATCH)
    model = _meta_model(tied, torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())  # parameters() dedupes tied ones
    assert result.params_total == n_params
    assert result.weights_bytes == 2 * n_params + _buffer_bytes(model)
    assert result.gradients_bytes == 2 * n_params


def test_lora_counts_equal_peft() -> None:
    from peft import LoraConfig, get_peft_model

    result = trace_training_step(
        SMALL_LLAMA, method="lora", seq_len=SEQ, micro_batch=BATCH, lora_rank=8
    )
    peft_model = get_peft_model(
        _meta_model(SMALL_LLAMA, torch.bfloat16),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert result.params_trainable == trainable
    assert result.params_total == total
    # adapters are fp32 (PEFT's autocast_adapter_dtype), base weights bf16
    assert result.gradients_bytes == 4 * trainable
    base = total - trainable
    assert result.weights_bytes == 2 * base + 4 * trainable + _buffer_bytes(peft_model)


def test_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="method"):
        trace_training_step(SMALL_LLAMA, method="qlora", seq_len=SEQ, micro_batch=BATCH)
