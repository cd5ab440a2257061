"""Per-node host RAM and NVMe: offloaded states, per-rank process memory, model loading.

- ZeRO-Offload (Ren et al. 2021, §4): the optimizer's fp32 master, states and an
  fp32 gradient copy live in (pinned) host memory, one partition per rank.
- ZeRO-Infinity (Rajbhandari et al. 2021): parameters offloaded to CPU or NVMe.
- Loading: `from_pretrained` without ZeRO-3's `zero.Init` materialises the whole
  model in host RAM on every rank before it moves to the GPU, so a node briefly
  holds `gpus_per_node` full copies. With zero.Init (ZeRO-3) or a quantized load
  straight to the GPU (QLoRA), a rank holds about one checkpoint shard at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.memory.dtypes import LAYOUTS
from planner.memory.model_states import ModelStates
from planner.setups import Setup
from planner.specs import ClusterSpec, ModelSpec

GIB = 1024**3
#: Resident memory of one training rank besides offloaded tensors: the Python
#: process, torch and CUDA host libraries, the tokenizer and dataloader workers.
HOST_BASE_PER_RANK_BYTES = 4 * GIB
#: transformers writes checkpoints in shards of at most 5 GB (`max_shard_size`).
CHECKPOINT_SHARD_BYTES = 5 * 10**9
#: Of the node's RAM, this share is planned for training; the rest is the OS's.
USABLE_HOST_FRACTION = 0.9


@dataclass(frozen=True)
class HostMemory:
    cpu_bytes: int  # steady state during training, per node
    loading_cpu_bytes: int  # while every rank loads the model at once, per node
    nvme_bytes: int  # offloaded to NVMe, per node


def host_memory(
    spec: ModelSpec, cluster: ClusterSpec, setup: Setup, states: ModelStates
) -> HostMemory:
    ranks = cluster.gpus_per_node
    on_cpu = 0
    on_nvme = 0
    if setup.offload_optimizer == "cpu":
        on_cpu += states.cpu_optimizer_bytes
    elif setup.offload_optimizer == "nvme":
        on_nvme += states.cpu_optimizer_bytes
    if setup.offload_params == "cpu":
        on_cpu += states.cpu_param_bytes
    elif setup.offload_params == "nvme":
        on_nvme += states.cpu_param_bytes
    steady = ranks * (HOST_BASE_PER_RANK_BYTES + on_cpu)
    full_copy = spec.params_total * LAYOUTS[setup.precision].weight_bytes
    if setup.method == "qlora" or setup.zero_stage == 3:
        per_rank_load = min(full_copy, CHECKPOINT_SHARD_BYTES)
    else:
        per_rank_load = full_copy
    loading = ranks * (HOST_BASE_PER_RANK_BYTES + per_rank_load)
    return HostMemory(cpu_bytes=steady, loading_cpu_bytes=loading, nvme_bytes=ranks * on_nvme)
