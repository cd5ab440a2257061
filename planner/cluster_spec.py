"""`--gpus` strings, node RAM and network sizes -> ClusterSpec.

Accepted `--gpus` forms (GPU names from planner/data/gpus.json, any case):
- `24xA800`: 24 GPUs, `gpus_per_node` (default 8) per node -> 3 nodes
- `3x8xA800`: 3 nodes × 8 GPUs
- `8xH100`, `A100-40GB:16` (type:count), `H100` (one node of `gpus_per_node`)
"""

from __future__ import annotations

import re

from planner.errors import PlannerInputError
from planner.gpus import find_gpu
from planner.specs import ClusterSpec, GpuSpec

DEFAULT_GPUS_PER_NODE = 8
#: Default node RAM: twice the node's total GPU memory (a common server sizing:
#: 8 × 80 GB GPUs with 1-2 TB of RAM), at least 64 GiB.
DEFAULT_RAM_PER_GPU_MEMORY = 2
#: Default inter-node network: one 200 Gb/s NIC (HDR InfiniBand / 200 GbE) per node.
DEFAULT_NETWORK_BYTES_PER_S = 200e9 / 8

GIB = 1024**3
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_RATE_BITS = {
    "gbps": 1e9 / 8,
    "gbit": 1e9 / 8,
    "gbit/s": 1e9 / 8,
    "gb/s": 1e9 / 8,
    "tbps": 1e12 / 8,
}


def parse_bytes(text: str, what: str) -> int:
    """`1TB`, `512GiB`, `1.5t` -> bytes. Decimal units are powers of 1000, *iB of 1024."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _SIZE_UNITS:
        raise PlannerInputError(
            f"{what}: cannot read {text!r} as a size; write e.g. 1TB, 1024GiB or 512GB"
        )
    value = float(m.group(1)) * _SIZE_UNITS[unit]
    if value <= 0:
        raise PlannerInputError(f"{what} must be positive, got {text!r}")
    return round(value)


def parse_network(text: str) -> float:
    """`200gbps`, `4x200gbps`, `400Gb/s` (bits) or `25GB/s` (bytes) -> bytes per second."""
    m = re.fullmatch(r"\s*(?:(\d+)\s*[x×]\s*)?([0-9]*\.?[0-9]+)\s*([a-zA-Z/]+)\s*", text)
    if m is None:
        raise PlannerInputError(
            f"--network: cannot read {text!r}; write e.g. 200gbps, 4x200gbps or 25GB/s"
        )
    count = int(m.group(1) or 1)
    value = float(m.group(2))
    unit = m.group(3)
    if unit in ("GB/s", "GBps"):  # capital B: bytes
        per = 1e9
    else:
        per = _RATE_BITS.get(unit.lower(), 0.0)  # Gb/s, gbps, gbit: bits
    if per == 0.0 or value <= 0 or count <= 0:
        raise PlannerInputError(
            f"--network: cannot read {text!r}; write e.g. 200gbps, 4x200gbps or 25GB/s"
        )
    return count * value * per


def parse_gpus(text: str, gpus_per_node: int | None = None) -> tuple[GpuSpec, int, int]:
    """`--gpus` -> (gpu, nodes, gpus_per_node). See the module docstring for the forms."""
    raw = text.strip()
    per_node_default = gpus_per_node or DEFAULT_GPUS_PER_NODE
    if gpus_per_node is not None and gpus_per_node <= 0:
        raise PlannerInputError(f"--gpus-per-node must be positive, got {gpus_per_node}")
    m3 = re.fullmatch(r"(\d+)\s*[x×]\s*(\d+)\s*[x×]\s*(.+)", raw, flags=re.IGNORECASE)
    m2 = re.fullmatch(r"(\d+)\s*[x×]\s*(.+)", raw, flags=re.IGNORECASE)
    mc = re.fullmatch(r"(.+?)\s*:\s*(\d+)", raw)
    if m3:
        nodes, per_node, name = int(m3.group(1)), int(m3.group(2)), m3.group(3)
        total = nodes * per_node
    elif m2:
        total, name = int(m2.group(1)), m2.group(2)
        nodes, per_node = 0, 0
    elif mc:
        name, total = mc.group(1), int(mc.group(2))
        nodes, per_node = 0, 0
    elif raw and re.fullmatch(r"[A-Za-z][\w\- ]*", raw):
        name, total = raw, per_node_default
        nodes, per_node = 1, per_node_default
    else:
        raise PlannerInputError(
            f"--gpus {text!r}: write COUNTxTYPE (24xA800), NODESxPER_NODExTYPE (3x8xA800) "
            "or TYPE:COUNT (A100-40GB:16)"
        )
    if total <= 0:
        raise PlannerInputError(f"--gpus {text!r}: the GPU count must be positive")
    gpu = find_gpu(name.strip())
    if nodes == 0:
        if total <= per_node_default:
            nodes, per_node = 1, total
        elif total % per_node_default == 0:
            nodes, per_node = total // per_node_default, per_node_default
        else:
            raise PlannerInputError(
                f"--gpus {text!r}: {total} GPUs is not a whole number of "
                f"{per_node_default}-GPU nodes; write NODESxPER_NODExTYPE "
                f"(e.g. 1x{total}x{name.strip()}) or pass --gpus-per-node"
            )
    if per_node <= 0 or nodes <= 0:
        raise PlannerInputError(f"--gpus {text!r}: node and GPU counts must be positive")
    return gpu, nodes, per_node


def build_cluster(
    gpus: str,
    *,
    gpus_per_node: int | None = None,
    node_ram: str | None = None,
    network: str | None = None,
    nvme: str | None = None,
) -> ClusterSpec:
    gpu, nodes, per_node = parse_gpus(gpus, gpus_per_node)
    return cluster_from_parts(
        gpu, nodes, per_node, node_ram=node_ram, network=network, nvme=nvme, source=gpus
    )


def cluster_from_parts(
    gpu: GpuSpec,
    nodes: int,
    per_node: int,
    *,
    node_ram: str | None,
    network: str | None,
    nvme: str | None,
    source: str,
) -> ClusterSpec:
    if node_ram is not None:
        ram = parse_bytes(node_ram, "--node-ram")
    else:
        ram = max(64 * GIB, DEFAULT_RAM_PER_GPU_MEMORY * per_node * gpu.memory_bytes)
    net = parse_network(network) if network is not None else DEFAULT_NETWORK_BYTES_PER_S
    nvme_bytes = parse_bytes(nvme, "--nvme") if nvme is not None else None
    return ClusterSpec(
        gpu=gpu,
        nodes=nodes,
        gpus_per_node=per_node,
        node_ram_bytes=ram,
        inter_node_bytes_per_s=net,
        nvme_bytes=nvme_bytes,
        source=source,
    )
