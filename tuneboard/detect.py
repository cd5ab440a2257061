"""Detect the local GPUs through NVML (for `plan` without --gpus)."""

from __future__ import annotations

from planner.cluster_spec import cluster_from_parts
from planner.errors import PlannerInputError
from planner.gpus import gpu_from_nvml_name
from planner.specs import ClusterSpec


def detect_local_cluster(
    *, node_ram: str | None, network: str | None, nvme: str | None
) -> ClusterSpec:
    """One node with the GPUs NVML sees. No driver -> a clear message asking for --gpus."""
    try:
        import pynvml
    except ImportError:
        raise PlannerInputError(
            "no --gpus given and nvidia-ml-py is not installed to detect GPUs; "
            "pass --gpus, e.g. --gpus 8xA800"
        ) from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise PlannerInputError(
            f"no --gpus given and no NVIDIA driver found here ({exc}); "
            "pass --gpus, e.g. --gpus 24xA800 or --gpus 3x8xH100"
        ) from None
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            raise PlannerInputError("no --gpus given and NVML sees no GPU here; pass --gpus")
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        if isinstance(name, bytes):
            name = name.decode()
        memory = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
    finally:
        pynvml.nvmlShutdown()
    gpu = gpu_from_nvml_name(str(name), memory)
    if gpu is None:
        raise PlannerInputError(
            f"detected {count} × {name!r}, which is not in the GPU catalog; pass --gpus with "
            "the closest catalog name (`tuneboard gpus`)"
        )
    return cluster_from_parts(
        gpu,
        1,
        count,
        node_ram=node_ram,
        network=network,
        nvme=nvme,
        source=f"detected {count}x{name}",
    )
