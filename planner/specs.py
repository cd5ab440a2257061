"""Frozen descriptions of what is being planned: the model, the GPU, the cluster.

Sizes are counts of parameters or elements; memory is in bytes (`*_bytes`),
bandwidth in bytes per second (`*_bytes_per_s`), compute in FLOP/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModelSource = Literal["catalog", "config", "hub", "size"]
MlpKind = Literal["gated", "plain"]
NormKind = Literal["rms", "layer"]
PositionKind = Literal["rope", "alibi", "learned"]


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, as far as memory and FLOPs are concerned.

    Parameter counts are exact: they equal what transformers counts on the meta
    device for the same config (tests/unit/test_model_catalog.py checks every
    catalog entry against transformers).
    """

    name: str
    source: ModelSource
    model_type: str  # HF `model_type`, e.g. "llama", "qwen2", "mixtral", "opt", "bloom"
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int  # per expert for MoE
    vocab_size: int
    tie_word_embeddings: bool
    mlp_kind: MlpKind  # "gated": SwiGLU/GeGLU (gate, up, down); "plain": fc1 -> act -> fc2
    norm_kind: NormKind  # RMSNorm (weight only) or LayerNorm (weight + bias)
    position_kind: PositionKind
    num_experts: int  # 1 for a dense model
    experts_per_token: int  # top-k routing; 1 for a dense model
    params_total: int
    params_embedding: int  # input embedding (and learned position embeddings, if any)
    params_lm_head: int  # 0 when tied to the input embedding
    params_per_layer: int  # one decoder layer, all experts
    params_per_layer_active: int  # one decoder layer, only the top-k experts of a token
    params_norm_per_layer: int  # norm weights (and biases) inside one layer
    params_final_norm: int
    linear_params_per_layer: int  # weights of nn.Linear modules in one layer (what bnb quantizes)
    hf_id: str | None = None
    note: str | None = None  # e.g. which reference architecture a size like `30b` stands for

    @property
    def params_active(self) -> int:
        """Parameters that touch one token (MoE: only the routed experts)."""
        return self.params_total - self.num_layers * (
            self.params_per_layer - self.params_per_layer_active
        )

    @property
    def params_norms(self) -> int:
        """All norm parameters (they stay in 16/32-bit under QLoRA)."""
        return self.num_layers * self.params_norm_per_layer + self.params_final_norm

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model. Vendor datasheet numbers (dense, no sparsity); see planner/data/gpus.json."""

    name: str
    memory_bytes: int
    bf16_tflops: float | None  # dense tensor-core TFLOPS; None: not supported
    fp16_tflops: float | None
    fp8_tflops: float | None
    fp32_tflops: float | None
    hbm_bytes_per_s: float
    nvlink_bytes_per_s: float | None  # per GPU, all links, one direction? see gpus.json "notes"
    pcie_bytes_per_s: float  # one direction
    mfu: float  # typical model FLOPs utilisation for LLM training on this class
    vendor: str = "nvidia"


@dataclass(frozen=True)
class Calibration:
    """Constants fitted from this user's own finished runs (planner/calibration.py), used
    instead of the provisional ones in planner/memory/overhead.py for one GPU model."""

    gpu_name: str
    multi_node: bool
    torch_version: str | None
    #: Largest measured (reserved - allocated) / allocated peak: the allocator's share.
    fragmentation_fraction: float
    #: Largest measured NVML used - reserved: CUDA context, cuBLAS, NCCL, per GPU.
    non_torch_bytes: int
    ranks: int  # how many rank measurements it was fitted from
    jobs: int
    source: str  # the calibration file


@dataclass(frozen=True)
class ClusterSpec:
    """Homogeneous nodes, each with `gpus_per_node` GPUs of one model."""

    gpu: GpuSpec
    nodes: int
    gpus_per_node: int
    node_ram_bytes: int
    inter_node_bytes_per_s: float  # per node, one direction (e.g. 4x200 Gb/s IB = 100e9)
    nvme_bytes: int | None  # free NVMe per node for offload; None: unknown
    source: str  # what it came from: "24xA800", a hostfile, "detected"
    #: This user's fitted constants for the GPU, when a calibration file has them.
    calibration: Calibration | None = None

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node
