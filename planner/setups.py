"""The dimensions of a fine-tuning setup, the user's pins on them, and their enumeration.

A `Setup` is one point in the space the planner searches: method × precision ×
optimizer × sharding (ZeRO 0-3 or FSDP) × offload × checkpointing × micro-batch
(× TP/PP when asked). `Constraints` pins any dimension; a dimension left open is
enumerated. Pinning every enumerated dimension yields exactly one setup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from planner.errors import PlannerInputError
from planner.specs import ClusterSpec, ModelSpec

Method = Literal["full", "freeze", "lora", "qlora", "dora"]
Precision = Literal["bf16-mixed", "bf16-pure", "fp16-mixed", "fp32"]
#: The optimizer *and its implementation*, as the recipes run it on CUDA (the step's
#: transient memory differs: planner/memory/optimizer_step.py). `adamw` is torch's fused
#: AdamW (`adamw_torch_fused`, the recipes' and transformers' default), `adamw-foreach`
#: is `adamw_torch` on CUDA, `adamw-single` torch's single-tensor loop (a CPU run).
Optimizer = Literal[
    "adamw", "adamw-foreach", "adamw-single", "adamw-8bit", "paged-adamw-8bit", "adafactor", "sgd"
]
Fsdp = Literal["full", "grad-op", "hybrid"]
Offload = Literal["none", "cpu", "nvme"]
Attention = Literal["sdpa", "flash", "eager"]

METHODS: tuple[Method, ...] = get_args(Method)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)
#: What each `Optimizer` is, in the words of the libraries that implement it.
OPTIMIZER_IMPLEMENTATIONS: dict[Optimizer, str] = {
    "adamw": "torch AdamW, fused kernel",
    "adamw-foreach": "torch AdamW, foreach kernels",
    "adamw-single": "torch AdamW, single-tensor loop",
    "adamw-8bit": "bitsandbytes AdamW8bit",
    "paged-adamw-8bit": "bitsandbytes PagedAdamW8bit",
    "adafactor": "transformers Adafactor",
    "sgd": "torch SGD, no momentum",
}
FSDP_MODES: tuple[Fsdp, ...] = get_args(Fsdp)
OFFLOADS: tuple[Offload, ...] = get_args(Offload)
ATTENTIONS: tuple[Attention, ...] = get_args(Attention)

#: Preference when the method is not pinned: full fine-tuning when it fits, else
#: the adapter methods (LoRA before QLoRA, which trades speed and some quality
#: for memory). DoRA and freeze are planned only when asked for.
DEFAULT_METHODS: tuple[Method, ...] = ("full", "lora", "qlora")
DEFAULT_MICRO_BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16)
DEFAULT_SEQ_LEN = 2048
DEFAULT_LORA_RANK = 16
DEFAULT_LORA_TARGETS = "all-linear"
DEFAULT_LORA_DROPOUT = 0.05
#: LLaMA-Factory's `freeze_trainable_layers` default: the last 2 decoder layers train.
DEFAULT_FREEZE_TRAINABLE_LAYERS = 2


@dataclass(frozen=True)
class Setup:
    """One candidate configuration. `zero_stage` is None when FSDP is used instead."""

    method: Method
    precision: Precision
    optimizer: Optimizer
    zero_stage: int | None
    fsdp: Fsdp | None
    offload_optimizer: Offload
    offload_params: Offload
    gradient_checkpointing: bool
    micro_batch_size: int
    seq_len: int
    global_batch_size: int | None = None
    tp: int = 1
    pp: int = 1
    fused_ce: bool = False
    attention: Attention = "sdpa"
    lora_rank: int = DEFAULT_LORA_RANK
    lora_targets: str = DEFAULT_LORA_TARGETS
    lora_dropout: float = DEFAULT_LORA_DROPOUT
    freeze_trainable_layers: int = DEFAULT_FREEZE_TRAINABLE_LAYERS

    @property
    def shards_params(self) -> bool:
        """ZeRO-3 / FSDP full or hybrid: the 16-bit weights themselves are partitioned."""
        return self.zero_stage == 3 or self.fsdp in ("full", "hybrid")

    @property
    def shards_gradients(self) -> bool:
        return (self.zero_stage is not None and self.zero_stage >= 2) or self.fsdp is not None

    @property
    def shards_optimizer(self) -> bool:
        return (self.zero_stage is not None and self.zero_stage >= 1) or self.fsdp is not None

    @property
    def sharding_label(self) -> str:
        if self.fsdp is not None:
            return f"FSDP-{self.fsdp}"
        return f"ZeRO-{self.zero_stage}"

    @property
    def is_adapter(self) -> bool:
        return self.method in ("lora", "qlora", "dora")

    def short_label(self) -> str:
        """`full Z3+oc ck mb16`: method, sharding (+oc/+pc: optimizer/params offloaded to
        CPU, +on/+pn: to NVMe), checkpointing, micro-batch. For narrow tables."""
        shard = f"Z{self.zero_stage}"
        if self.fsdp is not None:
            shard = {"full": "FSDP", "grad-op": "FSDP-go", "hybrid": "HSDP"}[self.fsdp]
        for kind, where in (("o", self.offload_optimizer), ("p", self.offload_params)):
            if where != "none":
                shard += f"+{kind}{where[0]}"
        ck = "ck " if self.gradient_checkpointing else ""
        return f"{self.method} {shard} {ck}mb{self.micro_batch_size}"

    def label(self) -> str:
        """A short human label, e.g. `lora ZeRO-3 off:opt=cpu ckpt mb4`."""
        parts = [self.method, self.sharding_label]
        if self.offload_optimizer != "none":
            parts.append(f"opt->{self.offload_optimizer}")
        if self.offload_params != "none":
            parts.append(f"params->{self.offload_params}")
        parts.append("ckpt" if self.gradient_checkpointing else "no-ckpt")
        parts.append(f"mb{self.micro_batch_size}")
        if self.tp > 1:
            parts.append(f"tp{self.tp}")
        if self.pp > 1:
            parts.append(f"pp{self.pp}")
        return " ".join(parts)


@dataclass(frozen=True)
class Constraints:
    """What the user pinned. `None` (or an empty tuple) leaves a dimension open."""

    method: Method | None = None
    precision: Precision | None = None
    optimizer: Optimizer | None = None
    zero_stage: int | None = None
    fsdp: Fsdp | None = None
    offload_optimizer: Offload | None = None
    offload_params: Offload | None = None
    gradient_checkpointing: bool | None = None
    micro_batch_size: int | None = None
    seq_len: int = DEFAULT_SEQ_LEN
    global_batch_size: int | None = None
    lora_rank: int = DEFAULT_LORA_RANK
    lora_targets: str = DEFAULT_LORA_TARGETS
    lora_dropout: float = DEFAULT_LORA_DROPOUT
    fused_ce: bool = False
    attention: Attention = "sdpa"
    tp: int = 1
    pp: int = 1
    micro_batch_choices: tuple[int, ...] = field(default=DEFAULT_MICRO_BATCHES)


def _require_positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise PlannerInputError(f"{name} must be a positive integer, got {value}")


def validate_constraints(c: Constraints, model: ModelSpec, cluster: ClusterSpec) -> None:
    """Reject impossible combinations with one clear message each."""
    _require_positive("--micro-batch", c.micro_batch_size)
    _require_positive("--seq-len", c.seq_len)
    _require_positive("--global-batch", c.global_batch_size)
    _require_positive("--lora-rank", c.lora_rank)
    _require_positive("--tp", c.tp)
    _require_positive("--pp", c.pp)
    if not 0.0 <= c.lora_dropout < 1.0:
        raise PlannerInputError(f"--lora-dropout must be in [0, 1), got {c.lora_dropout}")
    if c.zero_stage is not None and c.zero_stage not in (0, 1, 2, 3):
        raise PlannerInputError(f"--zero must be one of 0, 1, 2, 3, got {c.zero_stage}")
    if c.zero_stage is not None and c.fsdp is not None:
        raise PlannerInputError(
            f"--zero {c.zero_stage} and --fsdp {c.fsdp} are two ways to shard: pick one"
        )
    if c.offload_params not in (None, "none"):
        if c.zero_stage is not None and c.zero_stage != 3:
            raise PlannerInputError(
                f"--offload-params {c.offload_params} needs ZeRO-3 (or FSDP), "
                f"got --zero {c.zero_stage}"
            )
        if c.fsdp == "grad-op":
            raise PlannerInputError(
                f"--offload-params {c.offload_params} needs parameters to be sharded: "
                "use --fsdp full or hybrid, or --zero 3"
            )
    if c.offload_optimizer not in (None, "none") and c.zero_stage == 0:
        raise PlannerInputError(
            f"--offload-optimizer {c.offload_optimizer} needs ZeRO-1, 2 or 3, got --zero 0"
        )
    if c.fsdp is not None and c.offload_optimizer == "nvme":
        raise PlannerInputError("--offload-optimizer nvme is a DeepSpeed feature: use --zero 3")
    if c.fsdp is not None and c.offload_params == "nvme":
        raise PlannerInputError("--offload-params nvme is a DeepSpeed feature: use --zero 3")
    if c.precision in ("bf16-mixed", "bf16-pure") and cluster.gpu.bf16_tflops is None:
        raise PlannerInputError(
            f"--precision {c.precision}: {cluster.gpu.name} has no bf16 support; "
            "use fp16-mixed or fp32"
        )
    if c.method == "freeze" and model.num_layers < DEFAULT_FREEZE_TRAINABLE_LAYERS:
        raise PlannerInputError(
            f"--method freeze trains the last {DEFAULT_FREEZE_TRAINABLE_LAYERS} layers; "
            f"{model.name} has only {model.num_layers}"
        )
    if model.num_layers % c.pp != 0:
        divisors = [d for d in range(1, model.num_layers + 1) if model.num_layers % d == 0]
        raise PlannerInputError(
            f"--pp {c.pp} does not divide {model.name}'s {model.num_layers} layers: "
            f"use one of {', '.join(map(str, divisors))}"
        )
    if model.num_attention_heads % c.tp != 0 or model.num_key_value_heads % c.tp != 0:
        raise PlannerInputError(
            f"--tp {c.tp} must divide the attention heads ({model.num_attention_heads}) and "
            f"key/value heads ({model.num_key_value_heads}) of {model.name}"
        )
    if c.tp * c.pp > cluster.world_size or cluster.world_size % (c.tp * c.pp) != 0:
        raise PlannerInputError(
            f"--tp {c.tp} × --pp {c.pp} = {c.tp * c.pp} must divide the {cluster.world_size} GPUs"
        )
    if c.tp > cluster.gpus_per_node:
        raise PlannerInputError(
            f"--tp {c.tp} spans more than one node ({cluster.gpus_per_node} GPUs per node): "
            "tensor parallelism needs NVLink; use --pp across nodes"
        )
    if c.global_batch_size is not None:
        dp = cluster.world_size // (c.tp * c.pp)
        if c.micro_batch_size is not None and c.global_batch_size % (c.micro_batch_size * dp):
            raise PlannerInputError(
                f"--global-batch {c.global_batch_size} is not a multiple of micro-batch "
                f"{c.micro_batch_size} × {dp} data-parallel ranks"
            )


def _precision_default(cluster: ClusterSpec) -> Precision:
    return "bf16-mixed" if cluster.gpu.bf16_tflops is not None else "fp16-mixed"


def _sharding_choices(c: Constraints) -> list[tuple[int | None, Fsdp | None]]:
    if c.fsdp is not None:
        return [(None, c.fsdp)]
    if c.zero_stage is not None:
        return [(c.zero_stage, None)]
    return [(0, None), (1, None), (2, None), (3, None)]


def _offload_choices(
    c: Constraints, zero_stage: int | None, fsdp: Fsdp | None
) -> list[tuple[Offload, Offload]]:
    """(optimizer, params) offload pairs that make sense for a sharding choice.

    NVMe is planned only when asked for: it needs a fast local disk we cannot see.
    """
    shards_params = zero_stage == 3 or fsdp in ("full", "hybrid")
    if zero_stage == 0:
        opt_choices: list[Offload] = ["none"]
    elif c.offload_optimizer is not None:
        opt_choices = [c.offload_optimizer]
    else:
        opt_choices = ["none", "cpu"]
    if not shards_params:
        param_choices: list[Offload] = ["none"]
    elif c.offload_params is not None:
        param_choices = [c.offload_params]
    else:
        param_choices = ["none", "cpu"]
    pairs: list[tuple[Offload, Offload]] = []
    for opt in opt_choices:
        for par in param_choices:
            # Parameter offload without optimizer offload is legal but never better.
            if par != "none" and opt == "none" and c.offload_optimizer is None:
                continue
            pairs.append((opt, par))
    return pairs


def enumerate_setups(c: Constraints, model: ModelSpec, cluster: ClusterSpec) -> list[Setup]:
    """Every setup allowed by the constraints, in a deterministic order."""
    validate_constraints(c, model, cluster)
    methods: tuple[Method, ...] = (c.method,) if c.method else DEFAULT_METHODS
    precision = c.precision or _precision_default(cluster)
    ckpts = (c.gradient_checkpointing,) if c.gradient_checkpointing is not None else (False, True)
    mbs = (c.micro_batch_size,) if c.micro_batch_size is not None else c.micro_batch_choices
    dp = cluster.world_size // (c.tp * c.pp)
    out: list[Setup] = []
    for method in methods:
        optimizer: Optimizer = c.optimizer or "adamw"
        for zero, fsdp in _sharding_choices(c):
            for off_opt, off_par in _offload_choices(c, zero, fsdp):
                for ckpt in ckpts:
                    for mb in mbs:
                        if c.global_batch_size is not None and c.global_batch_size % (mb * dp):
                            continue
                        out.append(
                            Setup(
                                method=method,
                                precision=precision,
                                optimizer=optimizer,
                                zero_stage=zero,
                                fsdp=fsdp,
                                offload_optimizer=off_opt,
                                offload_params=off_par,
                                gradient_checkpointing=ckpt,
                                micro_batch_size=mb,
                                seq_len=c.seq_len,
                                global_batch_size=c.global_batch_size,
                                tp=c.tp,
                                pp=c.pp,
                                fused_ce=c.fused_ce,
                                attention=c.attention,
                                lora_rank=c.lora_rank,
                                lora_targets=c.lora_targets,
                                lora_dropout=c.lora_dropout,
                            )
                        )
    if not out:
        raise PlannerInputError(
            f"--global-batch {c.global_batch_size} is not a multiple of any micro-batch in "
            f"{list(mbs)} × {dp} data-parallel ranks"
        )
    return out
