"""Bytes per element for each precision mode, and what each mode keeps in which dtype.

| precision   | weights | grads | fp32 master | optimizer states | activations |
|-------------|---------|-------|-------------|------------------|-------------|
| bf16-mixed  | bf16 2  | bf16 2| yes, 4      | fp32             | bf16        |
| fp16-mixed  | fp16 2  | fp16 2| yes, 4      | fp32             | fp16        |
| bf16-pure   | bf16 2  | bf16 2| no          | bf16             | bf16        |
| fp32        | fp32 4  | fp32 4| no (weights)| fp32             | fp32        |

`bf16-mixed` is DeepSpeed's bf16 / FSDP MixedPrecision(param=bf16) layout: with
AdamW that is 2 + 2 + 12 = 16 bytes per parameter, K = 12 in the ZeRO paper
(Rajbhandari et al. 2020, §3.1). `bf16-pure` is LLaMA-Factory's `pure_bf16`:
the model and torch.optim.AdamW's states all in bf16 (AdamW keeps states in the
parameter dtype), 2 + 2 + 4 = 8 bytes per parameter.

PEFT adapters stay fp32 in every mode (`get_peft_model(autocast_adapter_dtype=True)`,
PEFT's default): 4-byte weights and gradients, no separate master copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.setups import Precision


@dataclass(frozen=True)
class DtypeLayout:
    weight_bytes: int  # bytes per weight element on the GPU
    grad_bytes: int
    master_bytes: int  # fp32 master copy held by the optimizer; 0 when none
    state_bytes: int  # bytes per optimizer-state element (Adam m and v each)
    activation_bytes: int  # compute dtype of activations
    mixed: bool  # autocast-style mixed precision (compute in 16-bit, master in fp32)


LAYOUTS: dict[Precision, DtypeLayout] = {
    "bf16-mixed": DtypeLayout(2, 2, 4, 4, 2, True),
    "fp16-mixed": DtypeLayout(2, 2, 4, 4, 2, True),
    "bf16-pure": DtypeLayout(2, 2, 0, 2, 2, False),
    "fp32": DtypeLayout(4, 4, 0, 4, 4, False),
}

#: PEFT adapters: fp32 weights and gradients, fp32 states, no master copy.
ADAPTER = DtypeLayout(4, 4, 0, 4, 4, False)

#: bitsandbytes NF4 with double quantization, bytes per quantized weight:
#: 4 bits + an 8-bit absmax per 64-weight block + an fp32 second-level absmax per
#: 256 blocks = 0.5 + 1/64 + 4/(64·256) ≈ 0.5159 (Dettmers et al. 2023, "QLoRA", §2:
#: double quantization cuts the constants from 0.5 to 0.127 bits per parameter).
NF4_DOUBLE_QUANT_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)

#: prepare_model_for_kbit_training (PEFT) casts every non-4-bit parameter
#: (embeddings, lm_head, norms, biases) from fp16/bf16 to fp32.
QLORA_UNQUANTIZED_BYTES = 4
