"""Memory a tensor count cannot see: CUDA context, library workspaces, NCCL, fragmentation.

These constants are provisional upper-side values from public measurements
(PyTorch forum and NVIDIA docs: a CUDA 12 context with lazy loading takes
0.3-0.6 GiB; cuBLAS(Lt) workspaces 2 × 32 MiB on Hopper; NCCL's buffers grow
with channels and peers, NCCL_BUFFSIZE = 4 MiB each). The planner-accuracy
benchmark (benchmarks/planner_accuracy.py, the trace issue) re-measures them
on real GPUs; until then they err high, never low.
"""

from __future__ import annotations

from planner.specs import Calibration

MIB = 1024**2
GIB = 1024**3

CUDA_CONTEXT_BYTES = 600 * MIB
CUBLAS_WORKSPACE_BYTES = 64 * MIB
NCCL_INTRA_NODE_BYTES = 512 * MIB
NCCL_INTER_NODE_BYTES = 1 * GIB
#: PyTorch's caching allocator rounds and splits blocks; 5% of the bytes that
#: come and go during a step (activations, logits, gradients, buffers).
FRAGMENTATION_FRACTION = 0.05
#: Of the GPU's memory, this share is kept free on top of the estimate.
USABLE_FRACTION = 0.95


def framework_overhead_bytes(
    world_size: int, nodes: int, calibration: Calibration | None = None
) -> int:
    """CUDA context + cuBLAS workspace + NCCL communicator buffers, per GPU; measured on
    this user's own runs when a calibration is given (planner/calibration.py)."""
    if calibration is not None:
        return calibration.non_torch_bytes
    total = CUDA_CONTEXT_BYTES + CUBLAS_WORKSPACE_BYTES
    if world_size > 1:
        total += NCCL_INTER_NODE_BYTES if nodes > 1 else NCCL_INTRA_NODE_BYTES
    return total


def fragmentation_bytes(
    dynamic_bytes: int, tensor_peak_bytes: int = 0, calibration: Calibration | None = None
) -> int:
    """What the caching allocator holds beyond the tensors: 5% of what comes and goes,
    or, calibrated, the measured share of the tensor peak."""
    if calibration is not None:
        return round(calibration.fragmentation_fraction * tensor_peak_bytes)
    return round(FRAGMENTATION_FRACTION * dynamic_bytes)
