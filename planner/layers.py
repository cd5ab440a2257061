"""The linear layers inside one decoder layer, and what each fine-tuning method trains.

Shapes follow the transformers implementation of each family (module names in
`NAMES`); LoRA adds `r × (in + out)` parameters per targeted linear (Hu et al.
2021, "LoRA", §4), DoRA adds a magnitude vector of `out` per target (Liu et al.
2024, "DoRA", eq. 2; PEFT `lora_magnitude_vector`).
"""

from __future__ import annotations

from dataclasses import dataclass

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
MIXTRAL_EXPERT_NAMES = {"gate": "w1", "up": "w3", "down": "w2"}

ROLE_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("q", "k", "v", "o", "qkv"),
    "mlp": ("gate", "up", "gate_up", "down", "fc1", "fc2"),
}


def layer_linears(spec: ModelSpec) -> list[Linear]:
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
        return out
    experts = spec.num_experts
    expert = experts > 1
    if expert:
        out.append(Linear("router", names.get("router", "gate"), h, experts))
    exp_names = MIXTRAL_EXPERT_NAMES if spec.model_type == "mixtral" else names
    if "gate_up" in names:
        out.append(Linear("gate_up", names["gate_up"], h, 2 * i, experts, expert))
    else:
        out.append(Linear("gate", exp_names["gate"], h, i, experts, expert))
        out.append(Linear("up", exp_names["up"], h, i, experts, expert))
    out.append(Linear("down", exp_names["down"], i, h, experts, expert))
    return out


def resolve_lora_targets(spec: ModelSpec, targets: str) -> list[Linear]:
    """The linears a `--lora-targets` value selects.

    Accepted: `all-linear` (PEFT's shorthand: every linear except the output
    head), `attention`, `mlp`, or a comma list of module names (`q_proj,v_proj`)
    or roles (`q,v`).
    """
    linears = layer_linears(spec)
    text = targets.strip().lower()
    if text in ("all-linear", "all_linear", "all"):
        return linears
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
        one = setup.lora_rank * (lin.in_features + lin.out_features)
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
    """Weights bitsandbytes replaces with 4-bit ones: every nn.Linear in the decoder
    layers (transformers' `get_keys_to_not_convert` keeps the output head in 16-bit)."""
    return spec.num_layers * spec.linear_params_per_layer
