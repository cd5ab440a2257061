"""The linear layers inside one decoder layer, and what each fine-tuning method trains.

Shapes follow the transformers implementation of each family (module names in
`NAMES`); LoRA adds `r × (in + out)` parameters per targeted linear (Hu et al.
2021, "LoRA", §4), DoRA adds a magnitude vector of `out` per target (Liu et al.
2024, "DoRA", eq. 2; PEFT `lora_magnitude_vector`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from planner.errors import PlannerInputError
from planner.setups import Setup
from planner.specs import ModelSpec


@dataclass(frozen=True)
class Linear:
    """One nn.Linear role in a decoder layer; `count` copies (experts) per layer."""

    role: str  # q k v o qkv gate up gate_up down fc1 fc2 router
    name: str  # the module name in transformers (what PEFT's target_modules matches)
    in_features: int
    out_features: int
    count: int = 1
    expert: bool = False  # an expert MLP of an MoE layer (a token uses top-k of them)
    is_module: bool = True  # an nn.Linear (PEFT targets it, bitsandbytes quantizes it)


#: transformers module names per role, by family. Anything not listed uses llama names.
NAMES: dict[str, dict[str, str]] = {
    "llama": {
        "q": "q_proj",
        "k": "k_proj",
        "v": "v_proj",
        "o": "o_proj",
        "gate": "gate_proj",
        "up": "up_proj",
        "down": "down_proj",
        "router": "gate",
    },
    "opt": {
        "q": "q_proj",
        "k": "k_proj",
        "v": "v_proj",
        "o": "out_proj",
        "fc1": "fc1",
        "fc2": "fc2",
    },
    "bloom": {
        "qkv": "query_key_value",
        "o": "dense",
        "fc1": "dense_h_to_4h",
        "fc2": "dense_4h_to_h",
    },
    "glm": {
        "q": "q_proj",
        "k": "k_proj",
        "v": "v_proj",
        "o": "o_proj",
        "gate_up": "gate_up_proj",
        "down": "down_proj",
    },
}

ROLE_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("q", "k", "v", "o", "qkv"),
    "mlp": ("gate", "up", "gate_up", "down", "fc1", "fc2"),
}


@lru_cache(maxsize=64)
def layer_linears(spec: ModelSpec) -> tuple[Linear, ...]:
    """The nn.Linear modules of one decoder layer (weights only; biases do not get LoRA)."""
    h, d = spec.hidden_size, spec.head_dim
    q_out = spec.num_attention_heads * d
    kv_out = spec.num_key_value_heads * d
    i = spec.intermediate_size
    family = spec.model_type if spec.model_type in NAMES else "llama"
    names = NAMES[family]
    out: list[Linear] = []
    if "qkv" in names:
        out.append(Linear("qkv", names["qkv"], h, q_out + 2 * kv_out))
    else:
        out.append(Linear("q", names["q"], h, q_out))
        out.append(Linear("k", names["k"], h, kv_out))
        out.append(Linear("v", names["v"], h, kv_out))
    out.append(Linear("o", names["o"], q_out, h))
    if spec.mlp_kind == "plain":
        out.append(Linear("fc1", names["fc1"], h, i))
        out.append(Linear("fc2", names["fc2"], i, h))
        return tuple(out)
    experts = spec.num_experts
    expert = experts > 1
    # transformers 5 keeps MoE experts (and Mixtral's router) as 3D nn.Parameters,
    # not nn.Linear: bitsandbytes leaves them in 16-bit (and PEFT's kbit preparation
    # then upcasts them to fp32); see modeling_mixtral.py, MixtralExperts.
    module = not expert
    if expert:
        out.append(Linear("router", names.get("router", "gate"), h, experts, is_module=False))
    exp_names = names
    if "gate_up" in names or expert:
        name = names.get("gate_up", "gate_up_proj")
        out.append(Linear("gate_up", name, h, 2 * i, experts, expert, module))
    else:
        out.append(Linear("gate", exp_names["gate"], h, i, experts, expert, module))
        out.append(Linear("up", exp_names["up"], h, i, experts, expert, module))
    out.append(Linear("down", exp_names["down"], i, h, experts, expert, module))
    return tuple(out)


def resolve_lora_targets(spec: ModelSpec, targets: str) -> list[Linear]:
    """The linears a `--lora-targets` value selects.

    Accepted: `all-linear` (PEFT's shorthand: every linear except the output
    head), `attention`, `mlp`, or a comma list of module names (`q_proj,v_proj`)
    or roles (`q,v`).
    """
    # PEFT >= 0.17 also wraps MoE expert tensors (`target_parameters`), so
    # all-linear reaches them even where they are not nn.Linear.
    linears = layer_linears(spec)
    text = targets.strip().lower()
    if text in ("all-linear", "all_linear", "all"):
        return list(linears)
    wanted: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if item in ROLE_GROUPS:
            wanted.update(ROLE_GROUPS[item])
            continue
        matches = [lin.role for lin in linears if item in (lin.role, lin.name.lower())]
        if not matches:
            accepted = sorted({lin.name for lin in linears} | {lin.role for lin in linears})
            raise PlannerInputError(
                f"--lora-targets: {item!r} is not a linear layer of {spec.name}; accepted: "
                f"all-linear, attention, mlp, or any of {', '.join(accepted)}"
            )
        wanted.update(matches)
    chosen = [lin for lin in linears if lin.role in wanted]
    if not chosen:
        raise PlannerInputError(f"--lora-targets {targets!r} selects no layer of {spec.name}")
    return chosen


def adapter_params(spec: ModelSpec, setup: Setup) -> int:
    """Trainable adapter parameters of LoRA / QLoRA / DoRA over the whole model.

    LoRA: `r·(in+out)` per target (A: r×in, B: out×r). DoRA: plus `out` magnitudes.
    """
    if not setup.is_adapter:
        return 0
    per_layer = 0
    for lin in resolve_lora_targets(spec, setup.lora_targets):
        rank = setup.lora_rank
        if lin.expert and lin.role == "gate_up":
            rank *= 2  # PEFT's ParamWrapper gives fused gate_up experts rank 2r (r each)
        one = rank * (lin.in_features + lin.out_features)
        if setup.method == "dora":
            one += lin.out_features
        per_layer += one * lin.count
    return per_layer * spec.num_layers


def trainable_params(spec: ModelSpec, setup: Setup) -> int:
    """Parameters that receive gradients and optimizer state.

    full: all. freeze: the last `freeze_trainable_layers` decoder layers
    (LLaMA-Factory's `finetuning_type: freeze`). Adapters: only the adapters.
    """
    if setup.method == "full":
        return spec.params_total
    if setup.method == "freeze":
        return setup.freeze_trainable_layers * spec.params_per_layer
    return adapter_params(spec, setup)


def quantizable_params(spec: ModelSpec) -> int:
    """Weights bitsandbytes replaces with 4-bit ones: the weight of every nn.Linear in
    the decoder layers (transformers' `get_keys_to_not_convert` keeps the output head
    in 16-bit; biases stay unquantized; MoE experts are not nn.Linear in transformers 5)."""
    per_layer = sum(
        lin.in_features * lin.out_features * lin.count
        for lin in layer_linears(spec)
        if lin.is_module
    )
    return spec.num_layers * per_layer
