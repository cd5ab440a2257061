"""Each rank's memory peaks, gathered to rank 0 for metrics.jsonl: what the run really used,
beside what the planner said (`tuneboard status` shows both).

Per rank: `allocated_peak_bytes` (torch.cuda.max_memory_allocated: the tensors),
`reserved_peak_bytes` (max_memory_reserved: what the caching allocator holds, what OOMs),
`device_used_bytes` (NVML's used memory of the rank's GPU now: reserved + CUDA context +
cuBLAS/NCCL workspaces, what nvidia-smi shows; other processes' too), and
`rss_peak_bytes` (the process's peak resident set, getrusage: on a CPU run the only
stand-in for GPU memory, and it includes the Python runtime and the libraries).
`None` where a figure does not exist (no CUDA, no NVML).
"""

from __future__ import annotations

import os
import resource
import socket
import sys
from typing import Any


def rank_peaks(rank: int, local_rank: int) -> dict[str, Any]:
    """This process's peaks (module docstring), with where it runs."""
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024  # Linux: KiB
    out: dict[str, Any] = {
        "rank": rank,
        "node": socket.gethostname(),
        "pid": os.getpid(),
        "device": "cpu",
        "allocated_peak_bytes": None,
        "reserved_peak_bytes": None,
        "device_used_bytes": None,
        "rss_peak_bytes": int(rss_bytes),
        "torch_version": str(torch.__version__),
    }
    if torch.cuda.is_available():
        device = torch.cuda.current_device()
        out["device"] = f"cuda:{device}"
        out["allocated_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
        out["reserved_peak_bytes"] = int(torch.cuda.max_memory_reserved(device))
        out["device_used_bytes"] = _nvml_used_bytes(local_rank)
    return out


def _nvml_used_bytes(local_rank: int) -> int | None:
    """NVML's used memory of this rank's GPU (CUDA_VISIBLE_DEVICES respected), or None."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        index = local_rank
        if ids and local_rank < len(ids) and ids[local_rank].isdigit():
            index = int(ids[local_rank])
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except pynvml.NVMLError:
        return None


def gather_peaks(rank: int, local_rank: int) -> list[dict[str, Any]]:
    """Every rank's peaks, in rank order, on every rank (a collective: call it on all)."""
    import torch.distributed as dist

    mine = rank_peaks(rank, local_rank)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return [p for p in everyone if isinstance(p, dict)]
