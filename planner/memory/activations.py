"""Activations saved for backward, and the logits / loss peak, per GPU.

Counted tensor by tensor from what autograd saves in the transformers
implementation (transformers 5.x, `modeling_llama.py` and kin), the way
Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models", §4.1, eq. 1: 34·s·b·h + 5·a·s²·b per layer) count Megatron's GPT. The
HF code differs from Megatron's in ways that matter, so every tensor is listed:

Per decoder layer and token, e = bytes of the compute dtype, h hidden, i MLP
width, a/kv query/key-value heads, d head dim:
- RMSNorm (×2): the fp32 upcast of its input (4h, saved by pow and mul) and the
  normalised output in the compute dtype (e·h, saved by the weight multiply and
  by the next linears). LayerNorm: its input (e·h) + output (e·h) + mean/rstd (8).
- attention, sdpa/flash: q and k after RoPE, v (e·(a + 2kv)·d), the kernel's
  output (e·a·d) and its contiguous transpose fed to o_proj (e·a·d), the fp32
  log-sum-exp (4a). Eager adds the fp32 softmax (4·a·s) and its cast (e·a·s),
  and materialises repeat_kv for GQA.
- gated MLP (SwiGLU): gate, up, act(gate), act·up (4·e·i). Plain MLP: fc1's
  output and act's output (2·e·i; ReLU shares one: e·i).
- dropout with p > 0 on CUDA: a 1-byte mask per element.
- MoE (Mixtral): the router logits (e·E) and fp32 routing weights (4E), and for
  each of the top-k experts a gathered copy of the token (e·h), the expert MLP
  (4·e·i) and the weighted output (e·h).
- LoRA per targeted linear: PEFT casts the input to the adapter's dtype
  (`_cast_input_dtype`, fp32) and lora_A saves that copy (4·in; under autocast
  the saved copy is the 16-bit recast, e·in), lora_A's output (4r); dropout > 0
  adds its output and mask. DoRA also saves the base output and the lora output
  (e·out + 4·out).
Gradient checkpointing (HF, one checkpoint per decoder layer): each layer keeps
its input (e·h); one layer is recomputed at a time in backward.

Logits and loss (transformers `ForCausalLMLoss`): the lm_head output (e·V), its
fp32 upcast (4·V), log_softmax's saved output (4·V) in forward; in backward that
saved output plus nll_loss's gradient and log_softmax's gradient (3 × 4·V).
A fused linear cross-entropy (Liger, `LigerFusedLinearCrossEntropyLoss`) never
holds more than one chunk of c = 2^⌈log2(⌈T / ⌈V/h⌉⌉)⌉ tokens of logits
(liger_kernel/ops/fused_linear_cross_entropy.py) plus the input gradient (e·T·h).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.layers import resolve_lora_targets
from planner.memory.dtypes import LAYOUTS
from planner.setups import Setup
from planner.specs import ModelSpec

#: Bloom's ALiBi attention has no sdpa/flash path in transformers: always eager.
EAGER_ONLY_MODEL_TYPES = frozenset({"bloom"})
#: Dropout probability in the default configs of these families (OPT: 0.1).
HIDDEN_DROPOUT = {"opt": 0.1}


@dataclass(frozen=True)
class ActivationEstimate:
    """Bytes on one GPU for one micro-batch."""

    per_layer_bytes: int  # saved by one decoder layer without checkpointing
    activations_bytes: int  # all layers' saved activations at the end of forward
    logits_bytes: int  # peak of the logits / loss tensors (forward or backward)
    tokens: int  # micro_batch · seq_len


def attention_kind(spec: ModelSpec, setup: Setup) -> str:
    if spec.model_type in EAGER_ONLY_MODEL_TYPES:
        return "eager"
    return setup.attention


def layer_bytes_per_token(spec: ModelSpec, setup: Setup) -> float:
    """Bytes one decoder layer saves for backward, per token (see the module docstring)."""
    e = LAYOUTS[setup.precision].activation_bytes
    h = spec.hidden_size
    a, kv, d = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim
    i = spec.intermediate_size
    s = setup.seq_len

    norm = (4 + e) * h if spec.norm_kind == "rms" else 2 * e * h + 8
    total = 2 * norm

    kind = attention_kind(spec, setup)
    kv_saved = kv
    if kind == "eager":
        kv_saved = a  # repeat_kv copies are what the matmuls save
        total += (4 + e) * a * s  # fp32 softmax probabilities + their cast
    else:
        total += 4 * a  # log-sum-exp
    total += e * (a + 2 * kv_saved) * d  # q, k, v
    total += 2 * e * a * d  # kernel output + contiguous transpose

    if spec.mlp_kind == "gated":
        mlp = 4 * e * i
    else:
        mlp = (1 if spec.model_type == "opt" else 2) * e * i  # ReLU saves one tensor
    if spec.is_moe:
        k = spec.experts_per_token
        total += (e + 4) * spec.num_experts + k * (mlp + 2 * e * h)
    else:
        total += mlp

    if HIDDEN_DROPOUT.get(spec.model_type, 0.0) > 0:
        total += 2 * h  # two 1-byte masks (after attention, after the MLP)

    if setup.is_adapter:
        adapter_input = 4 if not LAYOUTS[setup.precision].mixed else e
        for lin in resolve_lora_targets(spec, setup.lora_targets):
            n = lin.count if not lin.expert else spec.experts_per_token
            one = adapter_input * lin.in_features + 4 * setup.lora_rank
            if setup.method == "dora":
                one += (e + 4) * lin.out_features
            total += n * one
    return total


def activation_estimate(spec: ModelSpec, setup: Setup) -> ActivationEstimate:
    """Saved activations and the logits peak for one micro-batch on one GPU."""
    e = LAYOUTS[setup.precision].activation_bytes
    tokens = setup.micro_batch_size * setup.seq_len
    per_layer_token = layer_bytes_per_token(spec, setup)
    layers = spec.num_layers  # PP: the first stage holds pp micro-batches of L/pp layers
    final_norm = (4 + e) * spec.hidden_size if spec.norm_kind == "rms" else 2 * e * spec.hidden_size
    if setup.gradient_checkpointing:
        # Each layer keeps its input; backward recomputes one layer at a time.
        per_token = layers * e * spec.hidden_size + per_layer_token + final_norm
    else:
        per_token = layers * per_layer_token + final_norm
    acts = per_token * tokens / setup.tp  # Megatron sequence parallelism divides all of it
    return ActivationEstimate(
        per_layer_bytes=round(per_layer_token * tokens / setup.tp),
        activations_bytes=round(acts),
        logits_bytes=round(logits_bytes(spec, setup, tokens)),
        tokens=tokens,
    )


def logits_bytes(spec: ModelSpec, setup: Setup, tokens: int) -> float:
    """Peak bytes of the logits and the loss, forward or backward (module docstring)."""
    e = LAYOUTS[setup.precision].activation_bytes
    v = spec.vocab_size / setup.tp  # vocab-parallel lm_head under TP
    if setup.fused_ce:
        chunk: int = 2 ** math.ceil(
            math.log2(max(1, math.ceil(tokens / math.ceil(v / spec.hidden_size))))
        )
        chunk = min(chunk, tokens)
        return chunk * v * (e + 4) + e * tokens * spec.hidden_size
    upcast = 4 if e != 4 else 0
    forward = tokens * v * (e + upcast + 4)
    backward = tokens * v * 12
    return max(forward, backward)
