"""Activations saved for backward, and the logits / loss peak, per GPU.

Counted tensor by tensor from what autograd saves in the transformers 5
implementations (`modeling_llama.py` and kin), the way Korthikanti et al. 2022
("Reducing Activation Recomputation in Large Transformer Models", §4.1, eq. 1)
count Megatron's GPT. Autograd saves a tensor only when a gradient needs it, so
what a layer saves depends on what trains (`LayerMode`): a frozen linear saves
nothing (its input gradient needs only its weight), a frozen norm weight saves no
normalised copy, and a layer whose input and weights need no gradient saves
nothing at all (the frozen bottom of `freeze`, LoRA's first norm).

Per decoder layer and token (e = compute-dtype bytes, h hidden, i MLP width,
a / kv query / key-value heads, d head dim, s sequence length):
- RMSNorm: its fp32 upcast (4h, if its input needs a gradient), the normalised
  16-bit copy (e·h, if the norm weight trains), its output (e·h, saved by the
  next linears if they train). LayerNorm: its input (e·h) + mean/rstd (8), output.
- attention, sdpa / flash: q, k after RoPE and v (e·(a + 2kv)·d; transformers
  passes enable_gqa instead of repeat_kv when there is no mask), the output
  (e·a·d; o_proj reads it through a transpose view), the fp32 log-sum-exp (4a).
  Eager: q and repeat_kv'd k, v, the fp32 softmax (4·a·s) and its cast (e·a·s),
  the transposed output copy if o_proj trains.
- gated MLP (SwiGLU): gate (saved by SiLU), act(gate) and up (by the multiply),
  and their product if down_proj trains (3-4 × e·i). ReLU MLP (OPT): one e·i.
  GELU MLP (Bloom): its input, and its output if fc2 trains.
- MoE (transformers 5 Mixtral): fp32 router softmax (4E); per top-k expert, the
  gathered token (e·h), gate_up (2e·i), act (e·i), product (e·i), output (e·h).
- dropout with p > 0 on CUDA: a 1-byte mask per element.
- LoRA per target (PEFT 0.21 `lora.Linear.forward`): the input cast to the
  adapter's dtype, which lora_A saves (4·in, fp32 adapters; under autocast the
  saved copy is the 16-bit recast, e·in), lora_A's output (4r); dropout > 0 adds
  a 1-byte mask. DoRA also saves the base output and the LoRA output (e·out + 4·out).
QLoRA (`activation_dtypes`): the residual stream is fp32, so the checkpointed inputs,
RoPE's cos/sin, the MLP's gate/up/act and their gradients count 4 bytes; under autocast
what SDPA and the adapters read is recast to 16-bit, without it everything is fp32 and
an adapter reads the stream tensor itself (one saved copy per distinct input, unless
dropout makes one per target). Checked against traces of planner/qlora_emulation.py.
Gradient checkpointing (HF, one checkpoint per decoder layer): each layer keeps
its input (e·h), frozen ones too; backward recomputes one layer at a time.
Backward through a layer holds the gradients of its widest intermediates (≈ 2·e·i
per token, measured); DoRA's forward holds its weight-norm transient
(`dora_norm_bytes`). These happen while the logits do not exist, so they never
coexist with the logits peak (`overlap_bytes`).

Logits and loss (transformers `ForCausalLMLoss`): forward holds the lm_head output
(e·V), its fp32 upcast (4·V) and log_softmax's saved output (4·V); backward holds
that saved output, nll_loss's gradient and log_softmax's gradient (3 × 4·V): the
peak is 12·V per token. A fused linear cross-entropy (Liger,
`LigerFusedLinearCrossEntropyLoss`) holds one chunk of c = 2^⌈log2(⌈T/⌈V/h⌉⌉)⌉
tokens of logits (liger_kernel/ops/fused_linear_cross_entropy.py) plus the input
gradient (e·T·h).

Checked against fake-tensor traces of the real models: tests/integration/test_planner_vs_trace.py.
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
#: Hidden dropout in the default configs of these families (OPT: 0.1).
HIDDEN_DROPOUT = {"opt": 0.1}


#: Linear roles that read the same input tensor (a norm's output, the attention output,
#: the MLP's product) in the transformers implementations.
SAME_INPUT: dict[str, str] = {
    "q": "attention-in",
    "k": "attention-in",
    "v": "attention-in",
    "qkv": "attention-in",
    "o": "attention-out",
    "gate": "mlp-in",
    "up": "mlp-in",
    "gate_up": "mlp-in",
    "fc1": "mlp-in",
    "router": "mlp-in",
}


@dataclass(frozen=True)
class LayerMode:
    """What needs a gradient in one decoder layer."""

    weights_trainable: bool  # the layer's own weights train (full; freeze's top layers)
    adapters: bool  # LoRA / DoRA adapters on its linears
    input_requires_grad: bool  # the hidden state coming in carries a gradient

    @property
    def active(self) -> bool:
        return self.weights_trainable or self.adapters or self.input_requires_grad


@dataclass(frozen=True)
class ActivationEstimate:
    """Bytes on one GPU for one micro-batch."""

    per_layer_bytes: int  # saved by the busiest decoder layer without checkpointing
    activations_bytes: int  # saved at the end of forward (+ one recomputed layer with ckpt)
    logits_bytes: int  # peak of the logits / loss tensors (forward or backward)
    overlap_bytes: int  # part of the two above that never coexists (checkpointing)
    tokens: int  # micro_batch · seq_len


def attention_kind(spec: ModelSpec, setup: Setup) -> str:
    if spec.model_type in EAGER_ONLY_MODEL_TYPES:
        return "eager"
    return setup.attention


def layer_modes(spec: ModelSpec, setup: Setup) -> list[tuple[LayerMode, int]]:
    """(mode, number of layers) from the bottom of the stack to the top."""
    n = spec.num_layers
    if setup.method == "full":
        return [(LayerMode(True, False, True), n)]
    if setup.method == "freeze":
        first = n - setup.freeze_trainable_layers
        return [
            (LayerMode(False, False, False), first),
            (LayerMode(True, False, False), 1),
            (LayerMode(True, False, True), n - first - 1),
        ]
    # Adapters: the embedding output carries no gradient, unless checkpointing makes
    # PEFT call enable_input_require_grads().
    return [
        (LayerMode(False, True, setup.gradient_checkpointing), 1),
        (LayerMode(False, True, True), n - 1),
    ]


def activation_dtypes(setup: Setup) -> tuple[int, int]:
    """(compute, stream) bytes per element of the activations.

    Equal for every method but QLoRA. QLoRA's residual stream is fp32: PEFT's
    prepare_model_for_kbit_training casts embeddings, norms and lm_head to fp32, and
    bitsandbytes' Linear4bit returns its output in its input's dtype
    (planner/qlora_emulation.py has the sources). So the checkpointed layer inputs, RoPE's
    cos/sin, the MLP's gate/up/act and their gradients are 4 bytes. What autocast's
    matmuls and SDPA read (mixed precision) is recast to 16-bit; without autocast
    everything is fp32.
    """
    layout = LAYOUTS[setup.precision]
    e = layout.activation_bytes
    if setup.method != "qlora":
        return e, e
    return (e if layout.mixed else 4), 4


def _norm_bytes(spec: ModelSpec, e: int, in_rg: bool, weight_trains: bool) -> float:
    h = spec.hidden_size
    if spec.norm_kind == "rms":
        return (4 * h if in_rg else 0) + (e * h if weight_trains else 0)
    return e * h + 8 if (in_rg or weight_trains) else 0


def layer_bytes_per_token(spec: ModelSpec, setup: Setup, mode: LayerMode) -> float:
    """Bytes one decoder layer saves for backward, per token (see the module docstring)."""
    if not mode.active:
        return 0.0
    e, es = activation_dtypes(setup)
    h = spec.hidden_size
    a, kv, d = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim
    i = spec.intermediate_size
    wt = mode.weights_trainable

    total = _norm_bytes(spec, e, mode.input_requires_grad, wt)
    total += e * h if wt else 0  # norm output, saved by the trainable q/k/v
    if attention_kind(spec, setup) == "eager":
        total += e * (a + 2 * a) * d  # q and the repeat_kv'd k, v saved by the matmuls
        total += (4 + e) * a * setup.seq_len  # fp32 softmax + its 16-bit cast
        total += e * a * d if wt else 0  # transposed output copy saved by o_proj
    else:
        total += e * (a + 2 * kv) * d + e * a * d + 4 * a  # q, k, v, output, lse

    # post-attention norm: its input is the residual sum, which carries a gradient
    total += _norm_bytes(spec, e, True, wt)
    total += e * h if wt else 0  # its output, saved by the trainable MLP input linears

    if spec.mlp_kind == "gated":
        mlp = 3 * es * i + (es * i if wt else 0)
    elif spec.model_type == "opt":
        mlp = es * i  # ReLU saves its output, which fc2 also reads
    else:
        mlp = es * i + (es * i if wt else 0)
    if spec.is_moe:
        k = spec.experts_per_token
        total += 4 * spec.num_experts + k * (4 * e * i + 2 * es * h)
    else:
        total += mlp

    if HIDDEN_DROPOUT.get(spec.model_type, 0.0) > 0:
        total += 2 * h  # two 1-byte masks (after attention, after the MLP)

    if mode.adapters:
        mixed = LAYOUTS[setup.precision].mixed
        adapter_input = e if mixed else 4
        # An fp32 stream reaches lora_A as it is (PEFT's _cast_input_dtype is a no-op):
        # the targets reading one tensor (q/k/v, gate/up) save it once, unless dropout
        # makes each its own copy. A 16-bit one is cast per target (autocast, too, keeps
        # no cache for activations).
        shared = not mixed and es == 4 and setup.lora_dropout == 0
        # SDPA/flash return their output in the layout o_proj reads: the tensor SDPA saves
        inputs_seen = {"attention-out"} if attention_kind(spec, setup) != "eager" else set()
        for lin in resolve_lora_targets(spec, setup.lora_targets):
            n = spec.experts_per_token if lin.expert else lin.count
            source = SAME_INPUT.get(lin.role, lin.role)
            saved_input = adapter_input * lin.in_features
            if shared and not lin.expert:
                saved_input = 0 if source in inputs_seen else saved_input
                inputs_seen.add(source)
            one = saved_input + 4 * setup.lora_rank
            if setup.lora_dropout > 0:
                one += lin.in_features  # CUDA dropout's 1-byte mask
            if setup.method == "dora":
                one += (e + 4) * lin.out_features
            total += n * one
    return float(total)


def _final_norm_bytes(spec: ModelSpec, setup: Setup) -> float:
    """Per token: the final norm (trains only in full fine-tuning) and lm_head's input."""
    e = LAYOUTS[setup.precision].activation_bytes
    full = setup.method == "full"
    return _norm_bytes(spec, e, True, full) + (e * spec.hidden_size if full else 0)


def activation_estimate(spec: ModelSpec, setup: Setup) -> ActivationEstimate:
    """Saved activations and the logits peak for one micro-batch on one GPU."""
    e = activation_dtypes(setup)[1]  # the stream's: layer inputs, MLP widths, RoPE
    tokens = setup.micro_batch_size * setup.seq_len
    modes = [(m, count) for m, count in layer_modes(spec, setup) if count > 0]
    per_mode = [(layer_bytes_per_token(spec, setup, m), count) for m, count in modes]
    busiest = max(b for b, _ in per_mode)
    final = _final_norm_bytes(spec, setup)
    # TP (Megatron, with sequence parallelism) divides all of it; PP's first stage
    # holds pp micro-batches of L/pp layers, the same as L layers of one.
    scale = tokens / setup.tp
    logits = logits_bytes(spec, setup, tokens)
    # Backward through the top layer holds gradients of its widest intermediates
    # (the MLP's: about 2·e·i per token, measured on traces) on top of what is saved.
    width = spec.intermediate_size * (spec.experts_per_token if spec.is_moe else 1)
    backward = 2 * e * width + adapter_backward_bytes(spec, setup)
    transient = max(backward * scale, dora_norm_bytes(spec, setup))
    if setup.gradient_checkpointing:
        # torch.utils.checkpoint (non-reentrant) keeps every layer's input, even for
        # layers that need no gradient (freeze's frozen bottom, measured on traces).
        kept = spec.num_layers * e * spec.hidden_size
        recompute = busiest * scale
        acts = (kept + final) * scale + recompute + transient
        overlap = min(recompute + transient, logits)
        if setup.method == "freeze":
            # Traces of 7B freeze + checkpointing show the recompute meeting part of
            # the logits' backward; not understood yet, so no overlap is assumed.
            overlap = 0.0
    else:
        acts = (sum(b * count for b, count in per_mode) + final) * scale + transient
        overlap = min(transient, logits)
    acts += 16 * tokens  # int64 input_ids and labels
    if spec.position_kind == "rope":
        acts += 2 * e * spec.head_dim * tokens  # RoPE cos and sin, shared by every layer
    return ActivationEstimate(
        per_layer_bytes=round(busiest * scale),
        activations_bytes=round(acts),
        logits_bytes=round(logits),
        overlap_bytes=round(overlap),
        tokens=tokens,
    )


def adapter_backward_bytes(spec: ModelSpec, setup: Setup) -> float:
    """Per token: what backward through one adapter holds besides what forward saved.

    On a 16-bit stream, PEFT casts each adapter's input to fp32 (the adapters' dtype), so
    lora_A's input gradient comes out in fp32, the size of the widest adapted input
    (down_proj's: the MLP width), and dropout's backward adds one more fp32 tensor of that
    size. On an fp32 stream (QLoRA, fp32 training) there is no cast: that gradient is the
    stream's own, already in `2·e·width`; only autocast's 16-bit copy of a dropout output
    adds its gradient. Measured on fake-tensor traces with checkpointing, where backward
    through the top layer meets its recompute (tests/integration/test_planner_vs_trace.py:
    LoRA was 8-22% under without this term on a small vocabulary).
    """
    if not setup.is_adapter:
        return 0.0
    widest = max(
        (lin.in_features for lin in resolve_lora_targets(spec, setup.lora_targets)),
        default=0,
    )
    compute, stream = activation_dtypes(setup)
    dropout = setup.lora_dropout > 0
    if stream == 4:
        return compute * widest if dropout and compute < 4 else 0.0
    return 4 * widest * (2 if dropout else 1)


def dora_norm_bytes(spec: ModelSpec, setup: Setup) -> float:
    """DoRA's weight-norm transient in forward (and recompute), one target at a time.

    PEFT's DoRA forward (tuners/lora/dora.py) builds B·A by running the adapters on an
    fp32 identity (in × in), then W + s·BA and its pieces (≈ 4 fp32 copies of out × in)
    to take the column norm. It comes and goes before the logits exist.
    """
    if setup.method != "dora":
        return 0.0
    return (
        max(
            4 * (lin.in_features**2 + 4 * lin.in_features * lin.out_features)
            for lin in resolve_lora_targets(spec, setup.lora_targets)
        )
        / setup.tp
    )


def logits_bytes(spec: ModelSpec, setup: Setup, tokens: int) -> float:
    """Peak bytes of the logits and the loss, forward or backward (module docstring)."""
    e = activation_dtypes(setup)[0]  # QLoRA's fp32 lm_head makes fp32 logits without autocast
    v = spec.vocab_size / setup.tp  # vocab-parallel lm_head under TP
    if setup.fused_ce:
        per_chunk = math.ceil(tokens / math.ceil(v / spec.hidden_size))
        chunk: int = min(tokens, 2 ** math.ceil(math.log2(max(1, per_chunk))))
        return chunk * v * (e + 4) + e * tokens * spec.hidden_size
    upcast = 4 if e != 4 else 0
    forward = tokens * v * (e + upcast + 4)
    backward = tokens * v * 12
    return max(forward, backward)
