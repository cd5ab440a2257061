"""Small helpers that build specs for unit tests."""

from __future__ import annotations

from planner.cluster_spec import cluster_from_parts
from planner.gpus import find_gpu
from planner.specs import ClusterSpec, ModelSpec


def synthetic_spec(params: int, layers: int = 32, hidden: int = 4096) -> ModelSpec:
    """A dense LLaMA-shaped spec whose total is exactly `params` (for model-state tests)."""
    return ModelSpec(
        name=f"synthetic-{params}",
        source="size",
        model_type="llama",
        hidden_size=hidden,
        num_layers=layers,
        num_attention_heads=hidden // 128,
        num_key_value_heads=hidden // 128,
        head_dim=128,
        intermediate_size=hidden * 8 // 3,
        vocab_size=32000,
        tie_word_embeddings=False,
        mlp_kind="gated",
        norm_kind="rms",
        position_kind="rope",
        num_experts=1,
        experts_per_token=1,
        params_total=params,
        params_embedding=32000 * hidden,
        params_lm_head=32000 * hidden,
        params_per_layer=(params - 2 * 32000 * hidden) // layers,
        params_per_layer_active=(params - 2 * 32000 * hidden) // layers,
        params_norm_per_layer=2 * hidden,
        params_final_norm=hidden,
        linear_params_per_layer=(params - 2 * 32000 * hidden) // layers - 2 * hidden,
    )


def cluster_of(gpus: int, gpu: str = "A100-80GB", per_node: int | None = None) -> ClusterSpec:
    per = per_node or gpus
    return cluster_from_parts(
        find_gpu(gpu),
        gpus // per,
        per,
        node_ram=None,
        network=None,
        nvme=None,
        source=f"{gpus}x{gpu}",
    )
