"""A LoRA model made to behave, dtype for dtype, like the recipes' QLoRA model, for the
fake-tensor trace (planner/fake_trace.py), which cannot run bitsandbytes' 4-bit kernels.

What QLoRA changes besides the weights' storage (bitsandbytes 0.50, PEFT 0.21):
- PEFT's `prepare_model_for_kbit_training` casts every 16-bit parameter that is not
  4-bit (embeddings, norms, lm_head, MoE routers and experts) to fp32
  (peft/utils/other.py, "cast all non INT8 parameters to fp32"); measured on a tiny
  Mixtral: tests/integration/test_qlora_bytes.py. So the embedding output, and with it
  the whole residual stream, is fp32.
- `bnb.nn.Linear4bit.forward` (bitsandbytes/nn/modules.py:626-637) casts its input to
  the compute dtype, runs `matmul_4bit`, and casts the output back to the input's dtype:
  q/k/v, gate and up come out in fp32. `MatMul4Bit` saves only the 4-bit weight for
  backward (`ctx.tensors = (None, B)`, bitsandbytes/autograd/_functions.py:357-360): the
  cast copy of the input is not kept.
bitsandbytes replaces every `nn.Linear` but the output head (transformers'
`get_keys_to_not_convert`); the stand-in keeps those weights in the compute dtype (their
bytes are counted analytically as NF4: planner/memory/model_states.py).

Importing this module costs nothing: torch is imported inside the function.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["emulate_qlora"]


def _four_bit_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """`Linear4bit.forward` without the 4-bit storage: compute dtype in, input dtype out."""
    import torch.nn.functional as F

    compute = self.weight.dtype
    bias = None if self.bias is None else self.bias.to(compute)
    out: torch.Tensor = F.linear(x.to(compute), self.weight, bias)
    return out.to(x.dtype)


def emulate_qlora(model: torch.nn.Module) -> int:
    """Patch `model` (on the meta device, before materializing) in place; returns how many
    linears now behave as 4-bit ones. Their weights keep the model's 16-bit dtype."""
    import torch

    get_head: Any = model.get_output_embeddings  # a transformers PreTrainedModel (or PEFT's)
    head = get_head()
    quantized: set[int] = set()
    patched = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and module is not head:
            owner = module
            if any(p.requires_grad for p in owner.parameters()):
                continue  # a LoRA adapter's own linear (lora_A / lora_B), fp32 and trained
            owner.forward = types.MethodType(_four_bit_forward, owner)  # type: ignore[method-assign]
            quantized.update(id(p) for p in owner.parameters())
            patched += 1
    for param in model.parameters():
        if id(param) in quantized or param.requires_grad:
            continue
        if param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.to(torch.float32)
    return patched
