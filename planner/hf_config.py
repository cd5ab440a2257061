"""`ModelSpec` from a Hugging Face `config.json` (the built-in catalog of such configs is
planner/model_catalog.py).

Pure Python: this module imports neither torch nor transformers. Every count is
computed analytically from the config and is exact: it equals
`sum(p.numel() for p in model.parameters())` (tied weights counted once) of
`AutoModelForCausalLM.from_config(...)` built on the meta device.
tests/unit/test_model_catalog.py checks that for every catalog entry, term by
term, against the modules of the real transformers model.

Where the formulas come from: the `__init__` of each model's modules in
transformers 5.x (`transformers/models/<model_type>/modeling_<model_type>.py`);
the defaults used when a key is absent are those of the matching
`configuration_<model_type>.py` (e.g. a Qwen2 config without
`num_key_value_heads` gets 32 heads there, not `num_attention_heads`).

Units: every `params_*` value is a count of parameters (elements), not bytes.

Where the terms sit: `params_embedding` holds the token embedding plus, for
OPT, the learned positions and `project_in`/`project_out`; `params_final_norm`
holds every norm outside the decoder layers (Bloom: `ln_f` and
`word_embeddings_layernorm`); `linear_params_per_layer` holds every projection
weight and bias of one layer, for MoE the router and all experts included. Up to
transformers 4.x those are all `nn.Linear`; transformers 5 stores Mixtral /
Qwen2-MoE experts and routers as fused 3D `nn.Parameter`s, which bitsandbytes'
`replace_with_bnb_linear` (it swaps `nn.Linear` only) leaves unquantized.

Keys that fix the shape of the model (`hidden_size`, `num_hidden_layers`,
`num_attention_heads`, `intermediate_size`, `vocab_size`, and their equivalents
for OPT / Bloom / ChatGLM) are required: a config without them raises
`PlannerInputError` naming the key, instead of silently planning a default-sized
model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from planner.errors import PlannerInputError
from planner.specs import MlpKind, ModelSource, ModelSpec, NormKind, PositionKind

__all__ = ["SUPPORTED_MODEL_TYPES", "spec_from_hf_config"]


@dataclass(frozen=True)
class _LlamaFamily:
    """How one llama-shaped `model_type` differs from Llama.

    Each value is read from `configuration_<model_type>.py` (defaults) and
    `modeling_<model_type>.py` (which projections carry a bias) in transformers 5.
    """

    kv_heads_default: int | None  # None: num_attention_heads
    head_dim_default: int | None  # None: hidden_size // num_attention_heads
    tie_default: bool
    qkv_bias_key: str | None  # config key switching q/k/v biases; None: fixed to qkv_bias_default
    qkv_bias_default: bool
    o_bias_follows_qkv: bool  # o_proj gets a bias whenever q/k/v do (Llama, Qwen3, Gemma)
    mlp_bias_key: str | None  # config key switching gate/up/down biases (Llama's `mlp_bias`)
    norms_per_layer: int = 2  # hidden-size RMSNorms per layer (Gemma2 has 4)
    qk_norm: bool = False  # Qwen3: RMSNorm(head_dim) on queries and on keys


_LLAMA = _LlamaFamily(None, None, False, "attention_bias", False, True, "mlp_bias")

_LLAMA_FAMILIES: Mapping[str, _LlamaFamily] = MappingProxyType(
    {
        "llama": _LLAMA,
        "mistral": _LlamaFamily(8, None, False, None, False, False, None),
        "mixtral": _LlamaFamily(8, None, False, None, False, False, None),
        "qwen2": _LlamaFamily(32, None, False, None, True, False, None),
        "qwen3": _LlamaFamily(32, 128, False, "attention_bias", False, True, None, qk_norm=True),
        "qwen2_moe": _LlamaFamily(16, None, False, "qkv_bias", True, False, None),
        "glm": _LlamaFamily(2, 128, False, "attention_bias", True, False, None),
        "phi3": _LlamaFamily(None, None, False, None, False, False, None),
        "gemma": _LlamaFamily(16, 256, True, "attention_bias", False, True, None),
        "gemma2": _LlamaFamily(
            4, 256, True, "attention_bias", False, True, None, norms_per_layer=4
        ),
        # Remote code (baichuan-inc/Baichuan2-*): W_pack = q, k, v fused without bias,
        # NormHead lm_head = one [vocab, hidden] weight; the same count as Llama.
        "baichuan": _LlamaFamily(None, None, False, None, False, False, None),
    }
)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = (*_LLAMA_FAMILIES, "opt", "bloom", "chatglm")

# Keys that make an unknown model_type countable as a Llama-shaped decoder.
_LLAMA_LIKE_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads")


@dataclass(frozen=True)
class _Counts:
    """The shape and parameter counts of one model, before naming it."""

    model_type: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    mlp_kind: MlpKind
    norm_kind: NormKind
    position_kind: PositionKind
    num_experts: int
    experts_per_token: int
    params_embedding: int
    params_lm_head: int
    linear_per_layer: int  # nn.Linear weights + biases, all experts, router included
    norm_per_layer: int
    params_per_expert: int  # one routed expert; 0 for a dense model
    params_final_norm: int
    notes: tuple[str, ...] = ()


class _Reader:
    """Typed access to a config dict; every failure names the key and the model."""

    def __init__(self, config: Mapping[str, Any], name: str, model_type: str) -> None:
        self._config = config
        self._name = name
        self._model_type = model_type

    def _where(self) -> str:
        return f"config of {self._name!r} (model_type {self._model_type!r})"

    def has(self, key: str) -> bool:
        return self._config.get(key) is not None

    def int_(self, *keys: str, default: int | None = None, minimum: int = 1) -> int:
        """The first of `keys` present (not null); else `default`; else an error naming keys[0]."""
        for key in keys:
            value = self._config.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise PlannerInputError(
                    f"{self._where()}: {key!r} must be an integer, got {value!r}"
                )
            if value < minimum:
                raise PlannerInputError(
                    f"{self._where()}: {key!r} must be at least {minimum}, got {value}"
                )
            return value
        if default is None:
            raise PlannerInputError(
                f"{self._where()}: missing required key {keys[0]!r}"
                + (f" (or {', '.join(repr(k) for k in keys[1:])})" if len(keys) > 1 else "")
            )
        return default

    def bool_(self, key: str, default: bool) -> bool:
        value = self._config.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise PlannerInputError(
                f"{self._where()}: {key!r} must be true or false, got {value!r}"
            )
        return value

    def int_list(self, key: str) -> list[int]:
        value = self._config.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise PlannerInputError(
                f"{self._where()}: {key!r} must be a list of integers, got {value!r}"
            )
        return list(value)

    def error(self, message: str) -> PlannerInputError:
        return PlannerInputError(f"{self._where()}: {message}")


def _heads(r: _Reader, kv_default: int | None) -> tuple[int, int]:
    """(num_attention_heads, num_key_value_heads). An explicit null kv count means MHA."""
    heads = r.int_("num_attention_heads")
    if r.has("num_key_value_heads") or kv_default is None:
        kv = r.int_("num_key_value_heads", default=heads)
    else:
        kv = kv_default
    if heads % kv != 0:
        raise r.error(
            f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv})"
        )
    return heads, kv


def _default_head_dim(r: _Reader, hidden: int, heads: int) -> int:
    if hidden % heads != 0:
        raise r.error(
            f"hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}); "
            "set 'head_dim' explicitly"
        )
    return hidden // heads


def _gated_mlp(hidden: int, intermediate: int, bias: bool) -> int:
    """gate_proj + up_proj (hidden -> intermediate) + down_proj (intermediate -> hidden)."""
    return 3 * hidden * intermediate + (2 * intermediate + hidden if bias else 0)


def _llama_like(r: _Reader, model_type: str, family: _LlamaFamily, notes: list[str]) -> _Counts:
    """Llama and its relatives: pre-norm RMSNorm, RoPE, gated MLP (SwiGLU/GeGLU).

    Per layer (modeling_llama.py `LlamaAttention`, `LlamaMLP`, `LlamaDecoderLayer`):
    q_proj h x (H*d), k_proj and v_proj h x (K*d), o_proj (H*d) x h, gate/up h x I,
    down I x h, input_layernorm and post_attention_layernorm h each. GLM and Phi3
    fuse gate+up (and Phi3 q+k+v) into one Linear of the same total size.
    MoE (modeling_mixtral.py, modeling_qwen2_moe.py): the MLP becomes a router
    (E x h, no bias), E experts of 3*h*I_e each, and for Qwen2-MoE a shared
    expert (3*h*I_s) with a sigmoid gate Linear(h, 1).
    """
    hidden = r.int_("hidden_size")
    layers = r.int_("num_hidden_layers")
    vocab = r.int_("vocab_size")
    heads, kv = _heads(r, family.kv_heads_default)
    if r.has("head_dim"):
        head_dim = r.int_("head_dim")
    elif family.head_dim_default is not None:
        head_dim = family.head_dim_default
    else:
        head_dim = _default_head_dim(r, hidden, heads)
    tie = r.bool_("tie_word_embeddings", family.tie_default)

    qkv_bias = (
        r.bool_(family.qkv_bias_key, family.qkv_bias_default)
        if family.qkv_bias_key is not None
        else family.qkv_bias_default
    )
    o_bias = qkv_bias and family.o_bias_follows_qkv
    mlp_bias = r.bool_(family.mlp_bias_key, False) if family.mlp_bias_key is not None else False

    q_out, kv_out = heads * head_dim, kv * head_dim
    attention = hidden * (q_out + 2 * kv_out) + q_out * hidden
    attention += (q_out + 2 * kv_out if qkv_bias else 0) + (hidden if o_bias else 0)
    norms = family.norms_per_layer * hidden + (2 * head_dim if family.qk_norm else 0)

    num_experts, top_k, per_expert = 1, 1, 0
    if model_type == "mixtral":
        intermediate = r.int_("intermediate_size")
        num_experts = r.int_("num_local_experts", "num_experts", default=8)
        top_k = r.int_("num_experts_per_tok", default=2)
        per_expert = _gated_mlp(hidden, intermediate, bias=False)
        mlp = num_experts * hidden + num_experts * per_expert  # router + experts
    elif model_type == "qwen2_moe":
        intermediate, num_experts, top_k, per_expert, mlp = _qwen2_moe_mlp(r, hidden, layers)
    else:
        intermediate = r.int_("intermediate_size")
        mlp = _gated_mlp(hidden, intermediate, mlp_bias)
    if top_k > num_experts:
        raise r.error(
            f"num_experts_per_tok ({top_k}) exceeds the number of experts ({num_experts})"
        )

    position: PositionKind = "rope"
    if r.bool_("alibi", False) or (model_type == "baichuan" and hidden == 5120 and layers == 40):
        # Baichuan-13B and Baichuan2-13B (remote code) use ALiBi; their 7B siblings RoPE.
        position = "alibi"
    return _Counts(
        model_type=model_type,
        hidden_size=hidden,
        num_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        mlp_kind="gated",
        norm_kind="rms",
        position_kind=position,
        num_experts=num_experts,
        experts_per_token=top_k,
        params_embedding=vocab * hidden,
        params_lm_head=0 if tie else vocab * hidden,
        linear_per_layer=attention + mlp,
        norm_per_layer=norms,
        params_per_expert=per_expert,
        params_final_norm=hidden,
        notes=tuple(notes),
    )


def _qwen2_moe_mlp(r: _Reader, hidden: int, layers: int) -> tuple[int, int, int, int, int]:
    """(intermediate per expert, experts, top-k, params of one expert, MLP params of one layer).

    modeling_qwen2_moe.py `Qwen2MoeDecoderLayer`: layer i is sparse unless it is in
    `mlp_only_layers` or (i + 1) is not a multiple of `decoder_sparse_step`.
    ModelSpec describes every layer with one count, so a mix is refused.
    """
    num_experts = r.int_("num_experts", default=60, minimum=0)
    step = r.int_("decoder_sparse_step", default=1)
    mlp_only = set(r.int_list("mlp_only_layers"))
    sparse = [num_experts > 0 and i not in mlp_only and (i + 1) % step == 0 for i in range(layers)]
    if all(sparse):
        moe_intermediate = r.int_("moe_intermediate_size", default=1408)
        shared = r.int_("shared_expert_intermediate_size", default=5632)
        top_k = r.int_("num_experts_per_tok", default=4)
        per_expert = _gated_mlp(hidden, moe_intermediate, bias=False)
        mlp = (
            num_experts * hidden  # router
            + num_experts * per_expert
            + _gated_mlp(hidden, shared, bias=False)  # shared expert
            + hidden  # shared_expert_gate: Linear(hidden, 1)
        )
        return moe_intermediate, num_experts, top_k, per_expert, mlp
    if not any(sparse):
        intermediate = r.int_("intermediate_size")
        return intermediate, 1, 1, 0, _gated_mlp(hidden, intermediate, bias=False)
    raise r.error(
        "mixes dense and MoE layers (mlp_only_layers / decoder_sparse_step); tuneboard "
        "describes every layer with one parameter count and cannot plan this model"
    )


def _opt(r: _Reader) -> _Counts:
    """OPT (modeling_opt.py): post- or pre-LayerNorm, learned positions, ReLU MLP.

    Per layer: q/k/v/out_proj h x h, fc1 h x ffn, fc2 ffn x h, each with a bias when
    `enable_bias`; self_attn_layer_norm and final_layer_norm (weight + bias).
    Outside the layers: embed_tokens V x e (e = word_embed_proj_dim), learned
    positions (max_position_embeddings + 2) x h (`OPTLearnedPositionalEmbedding`
    keeps an offset of 2), project_in e x h and project_out h x e when e != h
    (counted here as embedding), a final LayerNorm when `do_layer_norm_before`
    and not `_remove_final_layer_norm`. lm_head V x e, tied by default.
    """
    hidden = r.int_("hidden_size")
    layers = r.int_("num_hidden_layers")
    heads = r.int_("num_attention_heads")
    ffn = r.int_("ffn_dim")
    vocab = r.int_("vocab_size")
    max_positions = r.int_("max_position_embeddings", default=2048)
    proj = r.int_("word_embed_proj_dim", default=hidden)
    bias = r.bool_("enable_bias", True)
    affine = r.bool_("layer_norm_elementwise_affine", True)
    final_norm = r.bool_("do_layer_norm_before", True) and not r.bool_(
        "_remove_final_layer_norm", False
    )
    tie = r.bool_("tie_word_embeddings", True)
    layer_norm = 2 * hidden if affine else 0

    linear = 4 * hidden * hidden + 2 * hidden * ffn
    linear += (4 * hidden + ffn + hidden) if bias else 0
    embedding = vocab * proj + (max_positions + 2) * hidden
    embedding += 2 * hidden * proj if proj != hidden else 0
    return _Counts(
        model_type="opt",
        hidden_size=hidden,
        num_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=_default_head_dim(r, hidden, heads),
        intermediate_size=ffn,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        mlp_kind="plain",
        norm_kind="layer",
        position_kind="learned",
        num_experts=1,
        experts_per_token=1,
        params_embedding=embedding,
        params_lm_head=0 if tie else vocab * proj,
        linear_per_layer=linear,
        norm_per_layer=2 * layer_norm,
        params_per_expert=0,
        params_final_norm=layer_norm if final_norm else 0,
    )


def _bloom(r: _Reader) -> _Counts:
    """Bloom (modeling_bloom.py): pre-LayerNorm, ALiBi, GELU MLP of 4h, all Linears biased.

    Per layer: query_key_value h x 3h, dense h x h, dense_h_to_4h h x 4h,
    dense_4h_to_h 4h x h (weights + biases); input_layernorm and
    post_attention_layernorm (weight + bias). Outside: word_embeddings V x h, and two
    LayerNorms: word_embeddings_layernorm and ln_f, both counted in
    `params_final_norm` (it holds every norm outside the layers). lm_head tied.
    """
    hidden = r.int_("n_embed", "hidden_size")
    layers = r.int_("n_layer", "num_hidden_layers")
    heads = r.int_("n_head", "num_attention_heads")
    vocab = r.int_("vocab_size")
    tie = r.bool_("tie_word_embeddings", True)
    inner = 4 * hidden
    linear = (hidden * 3 * hidden + 3 * hidden) + (hidden * hidden + hidden)
    linear += (hidden * inner + inner) + (inner * hidden + hidden)
    return _Counts(
        model_type="bloom",
        hidden_size=hidden,
        num_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=_default_head_dim(r, hidden, heads),
        intermediate_size=inner,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        mlp_kind="plain",
        norm_kind="layer",
        position_kind="alibi",
        num_experts=1,
        experts_per_token=1,
        params_embedding=vocab * hidden,
        params_lm_head=0 if tie else vocab * hidden,
        linear_per_layer=linear,
        norm_per_layer=2 * 2 * hidden,
        params_per_expert=0,
        params_final_norm=2 * 2 * hidden,
    )


def _chatglm(r: _Reader) -> _Counts:
    """ChatGLM2/3 and GLM-4 remote code (THUDM `modeling_chatglm.py`, model_type "chatglm").

    Not in transformers; the counts mirror that file and equal those of the native
    `glm` config with the same shapes (the catalog's chatglm3-6b entry is checked
    against transformers that way). Per layer: query_key_value h x (H*c + 2*G*c)
    (G = multi_query_group_num under multi-query attention, else H; c =
    kv_channels), dense (H*c) x h, dense_h_to_4h h x 2*ffn, dense_4h_to_h ffn x h;
    biases on query_key_value when `add_qkv_bias` or `add_bias_linear`, on the
    others when `add_bias_linear`; two RMSNorms (or LayerNorms). output_layer is a
    separate V x h Linear. ChatGLM-6B v1 (no `ffn_hidden_size`) is refused.
    """
    hidden = r.int_("hidden_size")
    layers = r.int_("num_layers", "num_hidden_layers")
    heads = r.int_("num_attention_heads")
    ffn = r.int_("ffn_hidden_size")
    vocab = r.int_("padded_vocab_size", "vocab_size")
    channels = (
        r.int_("kv_channels") if r.has("kv_channels") else _default_head_dim(r, hidden, heads)
    )
    groups = r.int_("multi_query_group_num") if r.bool_("multi_query_attention", False) else heads
    if heads % groups != 0:
        raise r.error(
            f"num_attention_heads ({heads}) must be a multiple of multi_query_group_num ({groups})"
        )
    bias_linear = r.bool_("add_bias_linear", False)
    qkv_bias = bias_linear or r.bool_("add_qkv_bias", False)
    rms = r.bool_("rmsnorm", True)
    tie = r.bool_("tie_word_embeddings", False)
    norm = hidden if rms else 2 * hidden

    qkv_out = heads * channels + 2 * groups * channels
    linear = hidden * qkv_out + heads * channels * hidden + hidden * 2 * ffn + ffn * hidden
    linear += qkv_out if qkv_bias else 0
    linear += (hidden + 2 * ffn + hidden) if bias_linear else 0
    return _Counts(
        model_type="chatglm",
        hidden_size=hidden,
        num_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=groups,
        head_dim=channels,
        intermediate_size=ffn,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        mlp_kind="gated",
        norm_kind="rms" if rms else "layer",
        position_kind="rope",
        num_experts=1,
        experts_per_token=1,
        params_embedding=vocab * hidden,
        params_lm_head=0 if tie else vocab * hidden,
        linear_per_layer=linear,
        norm_per_layer=2 * norm,
        params_per_expert=0,
        params_final_norm=norm if r.bool_("post_layer_norm", True) else 0,
    )


def _counts(config: Mapping[str, Any], name: str) -> _Counts:
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise PlannerInputError(
            f"config of {name!r}: missing required key 'model_type' (a string such as "
            f"'llama'); tuneboard knows {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    r = _Reader(config, name, model_type)
    if model_type == "opt":
        return _opt(r)
    if model_type == "bloom":
        return _bloom(r)
    if model_type == "chatglm":
        return _chatglm(r)
    family = _LLAMA_FAMILIES.get(model_type)
    notes: list[str] = []
    if model_type == "baichuan":
        notes.append(
            "Baichuan remote code counted as the equivalent Llama shape "
            "(W_pack = q/k/v fused, NormHead lm_head: same parameter count)"
        )
    if family is None:
        if not all(key in config for key in _LLAMA_LIKE_KEYS):
            raise PlannerInputError(
                f"config of {name!r}: model_type {model_type!r} is not supported and does not "
                f"look Llama-shaped (needs {', '.join(_LLAMA_LIKE_KEYS)}); tuneboard knows "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        family = _LLAMA
        notes.append(
            f"model_type {model_type!r} is not one tuneboard knows; counted as a Llama-shaped "
            "decoder (RMSNorm, RoPE, gated MLP), so parameter counts are an estimate"
        )
    return _llama_like(r, model_type, family, notes)


def spec_from_hf_config(
    config: Mapping[str, Any],
    *,
    name: str,
    source: ModelSource,
    hf_id: str | None = None,
    note: str | None = None,
) -> ModelSpec:
    """Build a `ModelSpec` from the dict of a Hugging Face `config.json`.

    `name` appears in every error message: pass the catalog name, the file path
    or the hub id. `note` is kept, followed by any note this function adds (e.g.
    that an unknown `model_type` was counted as Llama-shaped). The config is not
    modified. Raises `PlannerInputError` when a required key is missing or has
    the wrong type, or the model_type is neither supported nor Llama-shaped.
    """
    counts = _counts(config, name)
    per_layer = counts.linear_per_layer + counts.norm_per_layer
    inactive_experts = counts.num_experts - counts.experts_per_token
    per_layer_active = per_layer - inactive_experts * counts.params_per_expert
    total = (
        counts.params_embedding
        + counts.params_lm_head
        + counts.num_layers * per_layer
        + counts.params_final_norm
    )
    notes = ([note] if note else []) + list(counts.notes)
    return ModelSpec(
        name=name,
        source=source,
        model_type=counts.model_type,
        hidden_size=counts.hidden_size,
        num_layers=counts.num_layers,
        num_attention_heads=counts.num_attention_heads,
        num_key_value_heads=counts.num_key_value_heads,
        head_dim=counts.head_dim,
        intermediate_size=counts.intermediate_size,
        vocab_size=counts.vocab_size,
        tie_word_embeddings=counts.tie_word_embeddings,
        mlp_kind=counts.mlp_kind,
        norm_kind=counts.norm_kind,
        position_kind=counts.position_kind,
        num_experts=counts.num_experts,
        experts_per_token=counts.experts_per_token,
        params_total=total,
        params_embedding=counts.params_embedding,
        params_lm_head=counts.params_lm_head,
        params_per_layer=per_layer,
        params_per_layer_active=per_layer_active,
        params_norm_per_layer=counts.norm_per_layer,
        params_final_norm=counts.params_final_norm,
        linear_params_per_layer=counts.linear_per_layer,
        hf_id=hf_id,
        note="; ".join(notes) if notes else None,
    )
