"""The catalog and `spec_from_hf_config` against transformers itself.

For every entry of planner/data/models.json the real transformers model is built
from the entry's config on the meta device (no memory, no weights, no download)
and every count of the `ModelSpec` is checked against that model's modules:
the total (shared tensors counted once), one decoder layer, its norms and its
Linear weights, the embedding, the lm_head, the norms outside the layers, the
experts, the head shapes and the tying. Every model, the 405B and 176B ones
included, is built at full depth: on the meta device that takes well under a
second.

Without transformers installed those tests are skipped; the pure unit tests of
`spec_from_hf_config` and the catalog lookup at the bottom always run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from planner.errors import PlannerInputError
from planner.hf_config import spec_from_hf_config
from planner.model_catalog import CatalogEntry, find_catalog_entry, load_catalog
from planner.specs import ModelSpec

CATALOG = load_catalog()


@dataclass(frozen=True)
class _Measured:
    """Counts read off a real transformers model, module by module."""

    total: int
    per_layer: int
    per_layer_all_equal: bool
    norm_per_layer: int
    linear_per_layer: int
    per_expert: int
    embedding: int
    lm_head: int
    final_norm: int
    tied: bool
    num_layers: int
    num_key_value_heads: int
    head_dim: int


def _is_norm(module: Any) -> bool:
    return "norm" in type(module).__name__.lower()


def _is_linear_like(module: Any) -> bool:
    """nn.Linear, or the fused MoE modules transformers 5 uses instead of per-expert Linears."""
    import torch

    name = type(module).__name__
    return isinstance(module, torch.nn.Linear) or name.endswith(("Experts", "TopKRouter"))


def _direct_params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _layers(model: Any, num_layers: int) -> Any:
    import torch

    found = [
        m
        for _, m in model.named_modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) == num_layers
    ]
    assert len(found) == 1, f"expected one ModuleList of {num_layers} decoder layers"
    return found[0]


def _measure(model: Any, num_layers: int) -> _Measured:
    """Classify every parameter of `model`; fail on any parameter that fits no category."""
    import torch

    layers = _layers(model, num_layers)
    per_layer_counts = [sum(p.numel() for p in layer.parameters()) for layer in layers]

    norm = linear = per_expert = 0
    for name, module in layers[0].named_modules():
        if name.endswith(".experts"):
            # transformers 5: one module holding 3D tensors; 4.x: a ModuleList of MLPs
            if isinstance(module, torch.nn.ModuleList):
                per_expert = sum(p.numel() for p in module[0].parameters())
            else:
                per_expert = _direct_params(module) // module.num_experts
        own = _direct_params(module)
        if own == 0:
            continue
        if _is_linear_like(module):
            linear += own
        elif _is_norm(module):
            norm += own
        else:
            raise AssertionError(f"unclassified parameters in a layer: {type(module).__name__}")

    layer_param_ids = {id(p) for p in layers.parameters()}
    embedding_weight = model.get_input_embeddings().weight
    lm_head = model.get_output_embeddings()
    tied = lm_head.weight is embedding_weight

    embedding = final_norm = 0
    seen: set[int] = set()
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if id(p) in layer_param_ids or id(p) in seen or module is lm_head:
                continue
            seen.add(id(p))
            if isinstance(module, torch.nn.Embedding) or name.endswith(
                ("project_in", "project_out")
            ):
                embedding += p.numel()
            elif _is_norm(module):
                final_norm += p.numel()
            else:
                raise AssertionError(f"unclassified parameter outside the layers: {name}")

    attention = next(m for _, m in layers[0].named_modules() if hasattr(m, "head_dim"))
    config = model.config
    return _Measured(
        total=sum(p.numel() for p in model.parameters()),
        per_layer=per_layer_counts[0],
        per_layer_all_equal=len(set(per_layer_counts)) == 1,
        norm_per_layer=norm,
        linear_per_layer=linear,
        per_expert=per_expert,
        embedding=embedding,
        lm_head=0 if tied else lm_head.weight.numel(),
        final_norm=final_norm,
        tied=tied,
        num_layers=len(layers),
        num_key_value_heads=getattr(config, "num_key_value_heads", None)
        or config.num_attention_heads,
        head_dim=attention.head_dim,
    )


def _build_meta(entry: CatalogEntry) -> Any:
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    config = transformers.AutoConfig.for_model(**entry.config_dict())
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)


def _expected(spec: ModelSpec) -> _Measured:
    per_expert = (
        (spec.params_per_layer - spec.params_per_layer_active)
        // (spec.num_experts - spec.experts_per_token)
        if spec.is_moe
        else 0
    )
    return _Measured(
        total=spec.params_total,
        per_layer=spec.params_per_layer,
        per_layer_all_equal=True,
        norm_per_layer=spec.params_norm_per_layer,
        linear_per_layer=spec.linear_params_per_layer,
        per_expert=per_expert,
        embedding=spec.params_embedding,
        lm_head=spec.params_lm_head,
        final_norm=spec.params_final_norm,
        tied=spec.tie_word_embeddings,
        num_layers=spec.num_layers,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
    )


@pytest.mark.parametrize("entry", CATALOG, ids=[e.name for e in CATALOG])
def test_catalog_entry_matches_transformers(entry: CatalogEntry) -> None:
    spec = entry.to_spec()
    model = _build_meta(entry)
    assert _measure(model, spec.num_layers) == _expected(spec)
    assert spec.model_type == model.config.model_type


@pytest.mark.parametrize("entry", CATALOG, ids=[e.name for e in CATALOG])
def test_catalog_spec_is_self_consistent(entry: CatalogEntry) -> None:
    spec = entry.to_spec()
    assert spec.source == "catalog"
    assert spec.name == entry.name
    assert spec.params_total == (
        spec.params_embedding
        + spec.params_lm_head
        + spec.num_layers * spec.params_per_layer
        + spec.params_final_norm
    )
    assert spec.params_per_layer == spec.linear_params_per_layer + spec.params_norm_per_layer
    assert 0 < spec.params_active <= spec.params_total
    assert spec.is_moe == (spec.params_active < spec.params_total)
    assert spec.num_attention_heads % spec.num_key_value_heads == 0


# Published totals, to catch a config typed wrong in a way transformers would accept.
_PUBLISHED = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-0.5b": 494_032_768,
    "mixtral-8x7b": 46_702_792_704,
    "bloom-176b": 176_247_271_424,
    "opt-350m": 331_196_416,
    "phi-3-mini-4k": 3_821_079_552,
    "gemma-7b": 8_537_680_896,
    "chatglm3-6b": 6_243_584_000,
}


@pytest.mark.parametrize(("name", "total"), sorted(_PUBLISHED.items()))
def test_published_totals(name: str, total: int) -> None:
    entry = find_catalog_entry(name)
    assert entry is not None
    assert entry.to_spec().params_total == total


def test_opt_66b_has_64_layers() -> None:
    entry = find_catalog_entry("facebook/opt-66b")
    assert entry is not None
    assert entry.to_spec().num_layers == 64


def test_catalog_covers_the_brief() -> None:
    names = {e.name for e in CATALOG}
    required = {
        *(f"llama-2-{s}" for s in ("7b", "13b", "70b")),
        *(f"llama-{s}" for s in ("7b", "13b", "30b", "65b")),
        "llama-3-8b",
        "llama-3-70b",
        *(f"llama-3.1-{s}" for s in ("8b", "70b", "405b")),
        *(f"qwen2.5-{s}" for s in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")),
        "mistral-7b-v0.1",
        "mixtral-8x7b",
        "mixtral-8x22b",
        *(f"opt-{s}" for s in ("1.3b", "2.7b", "6.7b", "13b", "30b", "66b")),
        "bloom-7b1",
        "bloom-176b",
        "glm-4-9b",
        "chatglm3-6b",
        "baichuan2-7b",
        "baichuan2-13b",
        "yi-34b",
    }
    assert required <= names
    for entry in CATALOG:
        assert entry.name == entry.name.lower()
        assert entry.hf_id is None or entry.hf_id in entry.aliases


def test_catalog_file_is_plain_json_list() -> None:
    from importlib import resources

    raw = json.loads(
        resources.files("planner").joinpath("data").joinpath("models.json").read_text()
    )
    assert [item["name"] for item in raw] == [e.name for e in CATALOG]
    for item in raw:
        assert set(item) == {"name", "aliases", "hf_id", "config", "note"}
        assert "model_type" in item["config"]


# ------------------------------------------------------------------ lookup


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("llama-2-7b", "llama-2-7b"),
        ("meta-llama/Llama-2-7b-hf", "llama-2-7b"),
        ("Llama-2-7b-hf", "llama-2-7b"),
        ("llama2-7b", "llama-2-7b"),
        ("LLAMA_2_7B", "llama-2-7b"),
        ("llama27b", "llama-2-7b"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
        ("qwen2_5-7b", "qwen2.5-7b"),
        ("opt-1.3b", "opt-1.3b"),
        ("opt_1_3b", "opt-1.3b"),
        ("opt-13b", "opt-13b"),
        ("bigscience/bloom", "bloom-176b"),
        ("llama-3.1-405b", "llama-3.1-405b"),
        ("Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("huggyllama/llama-30b", "llama-30b"),
        ("THUDM/chatglm3-6b", "chatglm3-6b"),
        ("Baichuan2-13B-Chat", "baichuan2-13b"),
    ],
)
def test_find_catalog_entry(text: str, name: str) -> None:
    entry = find_catalog_entry(text)
    assert entry is not None
    assert entry.name == name


def test_find_catalog_entry_unknown_is_none() -> None:
    assert find_catalog_entry("gpt-5") is None
    assert find_catalog_entry("30b") is None


def test_find_catalog_entry_ambiguous_names_the_candidates() -> None:
    with pytest.raises(PlannerInputError, match=r"opt-1\.3b.*opt-13b|opt-13b.*opt-1\.3b"):
        find_catalog_entry("opt13b")


def test_catalog_config_is_read_only_and_copyable() -> None:
    entry = CATALOG[0]
    with pytest.raises(TypeError):
        entry.config["hidden_size"] = 1  # type: ignore[index]
    copied = entry.config_dict()
    copied["hidden_size"] = 1
    assert entry.config["hidden_size"] != 1


# ------------------------------------------------------- spec_from_hf_config


def _llama_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "vocab_size": 1000,
    }
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


def _spec(config: dict[str, Any]) -> ModelSpec:
    return spec_from_hf_config(config, name="tiny", source="config")


@pytest.mark.parametrize(
    "key", ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"]
)
def test_missing_key_is_named(key: str) -> None:
    config = _llama_config()
    del config[key]
    with pytest.raises(PlannerInputError, match=rf"'tiny'.*missing required key '{key}'"):
        _spec(config)


def test_missing_model_type_is_named() -> None:
    config = _llama_config()
    del config["model_type"]
    with pytest.raises(PlannerInputError, match="model_type"):
        _spec(config)


def test_missing_opt_ffn_dim_is_named() -> None:
    config = {
        "model_type": "opt",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
    }
    with pytest.raises(PlannerInputError, match="'ffn_dim'"):
        _spec(config)


def test_wrong_type_is_named() -> None:
    with pytest.raises(PlannerInputError, match="'hidden_size' must be an integer"):
        _spec(_llama_config(hidden_size="256"))


def test_unknown_not_llama_like_is_refused() -> None:
    with pytest.raises(PlannerInputError, match="'t5' is not supported"):
        _spec({"model_type": "t5", "d_model": 512, "num_layers": 6})


def test_unknown_llama_like_is_counted_as_llama_with_a_note() -> None:
    spec = _spec(_llama_config(model_type="my_llama"))
    assert spec.params_total == _spec(_llama_config()).params_total
    assert spec.note is not None
    assert "my_llama" in spec.note


def test_default_head_dim_is_hidden_over_heads() -> None:
    spec = _spec(_llama_config())
    assert spec.head_dim == 32
    assert spec.num_key_value_heads == 8


def test_explicit_head_dim_changes_attention_shapes() -> None:
    base = _spec(_llama_config())
    wide = _spec(_llama_config(head_dim=64))
    assert wide.head_dim == 64
    # q, k, v, o each grow by hidden * heads * (64 - 32)
    assert wide.params_per_layer - base.params_per_layer == 4 * 256 * 8 * 32


def test_head_dim_not_dividing_needs_explicit_value() -> None:
    with pytest.raises(PlannerInputError, match="head_dim"):
        _spec(_llama_config(num_attention_heads=7))
    assert _spec(_llama_config(num_attention_heads=7, head_dim=32)).head_dim == 32


def test_gqa_shrinks_k_and_v() -> None:
    mha = _spec(_llama_config())
    gqa = _spec(_llama_config(num_key_value_heads=2))
    assert gqa.num_key_value_heads == 2
    assert mha.params_per_layer - gqa.params_per_layer == 2 * 256 * (8 - 2) * 32


def test_gqa_must_divide_heads() -> None:
    with pytest.raises(PlannerInputError, match="multiple of num_key_value_heads"):
        _spec(_llama_config(num_key_value_heads=3))


def test_per_model_type_defaults_follow_transformers() -> None:
    # Qwen3Config.head_dim defaults to 128, whatever hidden_size / heads is
    assert _spec(_llama_config(model_type="qwen3", num_key_value_heads=2)).head_dim == 128
    # Qwen2Config.num_key_value_heads defaults to 32, not to num_attention_heads
    qwen2 = _spec(_llama_config(model_type="qwen2", hidden_size=4096, num_attention_heads=64))
    assert qwen2.num_key_value_heads == 32
    # an explicit null means "as many as attention heads" (LlamaConfig.__post_init__)
    assert _spec(_llama_config(num_key_value_heads=None)).num_key_value_heads == 8


def test_biases_and_tying() -> None:
    plain = _spec(_llama_config())
    biased = _spec(_llama_config(attention_bias=True, mlp_bias=True))
    assert biased.params_per_layer - plain.params_per_layer == (4 * 256) + (2 * 688 + 256)
    tied = _spec(_llama_config(tie_word_embeddings=True))
    assert tied.params_lm_head == 0
    assert plain.params_total - tied.params_total == 1000 * 256


def test_mixtral_active_parameters() -> None:
    spec = _spec(_llama_config(model_type="mixtral", num_local_experts=4, num_experts_per_tok=2))
    expert = 3 * 256 * 688
    assert (spec.num_experts, spec.experts_per_token) == (4, 2)
    assert spec.params_per_layer - spec.params_per_layer_active == 2 * expert
    assert spec.linear_params_per_layer >= 4 * expert + 4 * 256  # all experts + router


def test_qwen2_moe_mixed_layers_are_refused() -> None:
    with pytest.raises(PlannerInputError, match="mixes dense and MoE layers"):
        _spec(
            _llama_config(
                model_type="qwen2_moe", num_key_value_heads=8, num_experts=4, mlp_only_layers=[0]
            )
        )


def test_alibi_key_sets_position_kind() -> None:
    assert _spec(_llama_config(alibi=True)).position_kind == "alibi"
    assert _spec(_llama_config()).position_kind == "rope"


def test_chatglm_remote_config_matches_native_glm_equivalent() -> None:
    """THUDM/chatglm3-6b's own config.json counts like the catalog's native glm entry."""
    remote = {
        "model_type": "chatglm",
        "hidden_size": 4096,
        "num_layers": 28,
        "num_attention_heads": 32,
        "kv_channels": 128,
        "multi_query_attention": True,
        "multi_query_group_num": 2,
        "ffn_hidden_size": 13696,
        "padded_vocab_size": 65024,
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "rmsnorm": True,
        "post_layer_norm": True,
        "seq_length": 8192,
    }
    entry = find_catalog_entry("chatglm3-6b")
    assert entry is not None
    native = entry.to_spec()
    spec = spec_from_hf_config(remote, name="THUDM/chatglm3-6b", source="config")
    fields = (
        "params_total",
        "params_per_layer",
        "params_norm_per_layer",
        "linear_params_per_layer",
        "params_embedding",
        "params_lm_head",
        "params_final_norm",
        "num_key_value_heads",
        "head_dim",
    )
    assert {f: getattr(spec, f) for f in fields} == {f: getattr(native, f) for f in fields}


def test_baichuan_remote_config_counts_like_llama() -> None:
    config = {
        "model_type": "baichuan",
        "hidden_size": 5120,
        "intermediate_size": 13696,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "vocab_size": 125696,
        "model_max_length": 4096,
    }
    entry = find_catalog_entry("baichuan2-13b")
    assert entry is not None
    spec = spec_from_hf_config(config, name="baichuan2-13b-local", source="config")
    assert spec.params_total == entry.to_spec().params_total
    assert spec.position_kind == "alibi"


def test_config_is_not_modified() -> None:
    config = _llama_config(rope_scaling={"rope_type": "llama3", "factor": 8.0})
    before = json.dumps(config, sort_keys=True)
    _spec(config)
    assert json.dumps(config, sort_keys=True) == before


def test_every_catalog_note_survives() -> None:
    for entry in CATALOG:
        spec = entry.to_spec()
        if entry.note:
            assert spec.note is not None
            assert spec.note.startswith(entry.note)
