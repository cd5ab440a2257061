"""The fake-tensor trace of planner.fake_trace against the same steps on real CPU tensors.

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

from planner.fake_trace import TraceResult, trace_training_step  # noqa: E402
from planner.live_bytes import LiveBytesCounter  # noqa: E402

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


def test_gqa_under_sdpa_does_not_materialise_repeat_kv() -> None:
    """No mask, so transformers passes enable_gqa: k and v are saved at their kv width."""
    mha = trace_training_step(SMALL_LLAMA, seq_len=SEQ, micro_batch=BATCH)
    gqa = trace_training_step(
        {**SMALL_LLAMA, "num_key_value_heads": 1}, seq_len=SEQ, micro_batch=BATCH
    )
    tokens, layers, hidden = SEQ * BATCH, SMALL_LLAMA["num_hidden_layers"], 256
    head_dim = hidden // SMALL_LLAMA["num_attention_heads"]
    # saved per layer: k and v (bf16) at the kv width instead of the full width
    saved_less = layers * tokens * 2 * 2 * (hidden - head_dim)
    assert mha.activations_peak_bytes - gqa.activations_peak_bytes == saved_less


def _saved_after_forward(config: dict[str, Any], **kwargs: Any) -> int:
    """Bytes the second forward leaves alive for the backward (loss taken, output dropped)."""
    live: dict[str, int] = {}

    def on_step(counter: LiveBytesCounter, label: str) -> None:
        live[label] = counter.live

    trace_training_step(config, seq_len=SEQ, micro_batch=BATCH, on_step=on_step, **kwargs)
    return live["iter1:backward"] - live["iter1:forward"]


def test_lora_dropout_keeps_a_bool_mask_per_adapter_input() -> None:
    """GPU-like dropout: one byte per element of each adapter's input, nothing else."""
    plain = _saved_after_forward(SMALL_LLAMA, method="lora")
    dropped = _saved_after_forward(SMALL_LLAMA, method="lora", lora_dropout=0.1)
    tokens, layers = SEQ * BATCH, SMALL_LLAMA["num_hidden_layers"]
    hidden, inter = SMALL_LLAMA["hidden_size"], SMALL_LLAMA["intermediate_size"]
    # q, k, v, o, gate, up read `hidden` features; down reads `inter`. In the first layer
    # the input of q, k, v does not require grad (frozen embeddings), so no mask is saved.
    assert dropped - plain == tokens * (layers * (6 * hidden + inter) - 3 * hidden)


@pytest.mark.parametrize(
    ("optimizer", "transient"),
    [("adamw", "single-tensor"), ("adamw_fused", "none"), ("adamw_foreach", "1x all")],
)
def test_optimizer_step_transients(optimizer: str, transient: str) -> None:
    r = trace_training_step(SMALL_LLAMA, seq_len=SEQ, micro_batch=BATCH, optimizer=optimizer)
    sizes = [2 * p.numel() for p in _meta_model(SMALL_LLAMA, torch.bfloat16).parameters()]
    # single-tensor: sqrt and div of this parameter, while the previous one's `denom` is
    # still bound to the loop's local variable
    single = max(2 * size + prev for size, prev in zip(sizes, [0, *sizes[:-1]], strict=True))
    expected = {"single-tensor": single, "none": 0, "1x all": r.gradients_bytes}[transient]
    inputs = 2 * BATCH * SEQ * 8  # input_ids and labels (int64)
    steady = r.weights_bytes + r.gradients_bytes + r.optimizer_bytes + inputs
    assert r.phase_peak_bytes["optimizer"] - steady == expected


def test_qlora_emulation_casts_what_prepare_model_for_kbit_training_casts() -> None:
    """Every decoder nn.Linear behaves as a Linear4bit (compute dtype in, input dtype
    out); embeddings, norms and lm_head become fp32; the adapters stay as PEFT made them."""
    import torch

    from planner.fake_trace import _apply_method, _build_on_meta
    from planner.qlora_emulation import emulate_qlora

    model = _build_on_meta(SMALL_LLAMA, torch.bfloat16, "sdpa")
    model = _apply_method(
        model,
        "lora",
        lora_rank=4,
        lora_alpha=8,
        lora_dropout=0.0,
        lora_targets="all-linear",
        freeze_trainable_layers=2,
    )
    patched = emulate_qlora(model)
    assert patched == 7 * SMALL_LLAMA["num_hidden_layers"]  # q k v o gate up down
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["base_model.model.model.embed_tokens.weight"] == torch.float32
    assert dtypes["base_model.model.lm_head.weight"] == torch.float32
    assert all(d == torch.float32 for n, d in dtypes.items() if "norm" in n or "lora_" in n)
    bases = [d for n, d in dtypes.items() if "base_layer" in n]
    assert bases and all(d == torch.bfloat16 for d in bases)


def test_qlora_emulation_under_autocast_counts_the_same_on_fake_and_real_tensors() -> None:
    _assert_same(
        *_both(SMALL_LLAMA, method="lora", dtype="bf16", qlora=True, autocast=True, lora_rank=4)
    )
