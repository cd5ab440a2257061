"""The planner's fit check for a recipe on the GPUs preflight found.

The recipe's own setup (method, precision, optimizer, ZeRO/FSDP, offload, checkpointing,
micro-batch, sequence length) becomes one planner `Setup`; the detected GPU model and
memory, node count, processes per node and the smallest node's RAM become the
`ClusterSpec`; `planner.memory.breakdown.estimate_memory` gives the per-GPU peak. The
launch is refused when that peak exceeds the usable GPU memory (or the free memory some
other process left), unless `--force`. Loading the model into host RAM on every rank at
once is a warning, not a refusal (the planner's note says how to avoid it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from planner.cluster_spec import cluster_from_parts
from planner.errors import PlannerInputError
from planner.gpus import find_gpu, gpu_from_nvml_name
from planner.hf_config import spec_from_hf_config
from planner.layers import adapter_params
from planner.memory.breakdown import MemoryBreakdown, estimate_memory
from planner.models import resolve_model
from planner.setups import Setup
from planner.specs import ModelSpec
from recipes.schema import Recipe

GIB = 1024**3
#: The GPU a CPU run's tensors are planned on (any catalog GPU gives the same tensor bytes).
STAND_IN_GPU = "H100"
FitStatus = Literal["fits", "too-big", "skipped"]
_ATTENTION = {"sdpa": "sdpa", "flash_attention_2": "flash", "eager": "eager"}
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}
#: Reads `<model>/config.json` on the master node when the model is a path there.
ConfigReader = Callable[[str], dict[str, Any] | None]


@dataclass(frozen=True)
class FitReport:
    status: FitStatus
    #: One line: what was checked and the verdict, or why it was not checked.
    reason: str
    setup_label: str | None
    gpu_name: str | None
    breakdown: MemoryBreakdown | None
    #: Smallest free memory on any GPU of the job, when known.
    min_free_gpu_bytes: int | None
    warnings: tuple[str, ...]
    #: Rough size of one checkpoint plus the final weights (for the disk check).
    checkpoint_bytes: int | None
    #: The planner's tensor bytes per GPU (per rank on a CPU run, planned as on a GPU),
    #: what a run's measured peaks are set against (`tuneboard status`); None if unknown.
    planned_tensor_bytes: int | None = None

    @property
    def refused(self) -> bool:
        return self.status == "too-big"


def model_spec(recipe: Recipe, read_node_config: ConfigReader | None = None) -> ModelSpec:
    """The recipe's model as the planner sees it. Raises PlannerInputError when unknown."""
    model = recipe.model
    if model.tiny is not None:
        config = {**model.tiny.config, "vocab_size": model.tiny.vocab_size}
        return spec_from_hf_config(config, name=model.name, source="config")
    try:
        return resolve_model(model.name, revision=model.revision)
    except PlannerInputError:
        if read_node_config is None:
            raise
        found = read_node_config(model.name)
        if found is None:
            raise
        return spec_from_hf_config(found, name=model.name, source="config")


def setup_for(recipe: Recipe) -> Setup:
    t, m, d = recipe.training, recipe.method, recipe.distributed
    targets = m.lora.target_modules
    return Setup(
        method=m.kind,
        precision=t.precision,
        optimizer=t.optimizer,
        zero_stage=None if d.fsdp is not None else (d.zero_stage or 0),
        fsdp=d.fsdp,
        offload_optimizer=d.offload_optimizer,
        offload_params=d.offload_params,
        gradient_checkpointing=t.gradient_checkpointing,
        micro_batch_size=t.micro_batch_size,
        seq_len=t.seq_len,
        global_batch_size=t.global_batch_size,
        fused_ce=t.fused_ce,
        attention=_ATTENTION[recipe.model.attn_implementation],  # type: ignore[arg-type]
        lora_rank=m.lora.rank,
        lora_targets=targets if isinstance(targets, str) else ",".join(targets),
        lora_dropout=m.lora.dropout,
        freeze_trainable_layers=m.freeze_trainable_layers,
    )


def check_fit(
    recipe: Recipe,
    spec: ModelSpec | None,
    *,
    nodes: int,
    nproc_per_node: int,
    gpu_name: str | None,
    gpu_memory_bytes: int | None,
    min_free_gpu_bytes: int | None,
    node_ram_bytes: int | None,
    cpu: bool,
    unknown_model: str = "",
) -> FitReport:
    if spec is None:
        return _skipped(f"model not known to the planner, fit not checked: {unknown_model}")
    setup = setup_for(recipe)
    try:
        trainable = adapter_params(spec, setup) if setup.is_adapter else spec.params_total
    except PlannerInputError as err:
        return _skipped(f"fit not checked: {err}")
    ckpt = _checkpoint_bytes(recipe, spec, trainable)
    warnings = []
    if cpu or gpu_name is None or gpu_memory_bytes is None:
        load = nproc_per_node * spec.params_total * _DTYPE_BYTES[recipe.model.dtype]
        if node_ram_bytes is not None and load > node_ram_bytes:
            warnings.append(
                f"loading: {nproc_per_node} ranks each load the model into host RAM at once, "
                f"{load / GIB:.1f} GiB > {node_ram_bytes / GIB:.1f} GiB node RAM"
            )
        why = "CPU run: no GPU memory to check" if cpu else "no GPU detected"
        return replace(
            _skipped(why),
            setup_label=setup.label(),
            warnings=tuple(warnings),
            checkpoint_bytes=ckpt,
            planned_tensor_bytes=_tensor_bytes(spec, setup, nodes, nproc_per_node),
        )
    gpu = gpu_from_nvml_name(gpu_name, gpu_memory_bytes)
    if gpu is None:
        return replace(
            _skipped(f"{gpu_name} is not in the planner's GPU catalog; fit not checked"),
            checkpoint_bytes=ckpt,
        )
    cluster = cluster_from_parts(
        gpu, nodes, nproc_per_node, node_ram=None, network=None, nvme=None, source="detected"
    )
    if node_ram_bytes is not None:
        cluster = replace(cluster, node_ram_bytes=node_ram_bytes)
    try:
        mem = estimate_memory(spec, cluster, setup)
    except PlannerInputError as err:
        return replace(_skipped(f"fit not checked: {err}"), checkpoint_bytes=ckpt)
    if mem.host.loading_cpu_bytes > cluster.node_ram_bytes:
        warnings.append(
            f"loading: {nproc_per_node} ranks each load the model into host RAM at once, "
            f"{mem.host.loading_cpu_bytes / GIB:.1f} GiB > {cluster.node_ram_bytes / GIB:.1f} "
            "GiB node RAM; load with ZeRO-3 (zero.Init) or stagger the ranks"
        )
    need, usable = mem.total_bytes / GIB, mem.usable_bytes / GIB
    where = f"{spec.name} {setup.label()} on {nodes}x{nproc_per_node}x{gpu.name}"
    if not mem.fits_gpu:
        status: FitStatus = "too-big"
        reason = f"{where}: {need:.1f} GiB per GPU > {usable:.1f} GiB usable"
    elif not mem.fits_host:
        status = "too-big"
        reason = (
            f"{where}: host RAM {mem.host.cpu_bytes / GIB:.0f} GiB > "
            f"{mem.usable_host_bytes / GIB:.0f} GiB usable per node"
        )
    elif min_free_gpu_bytes is not None and mem.total_bytes > min_free_gpu_bytes:
        status = "too-big"
        reason = (
            f"{where}: {need:.1f} GiB per GPU fits an idle GPU, but one has only "
            f"{min_free_gpu_bytes / GIB:.1f} GiB free (another job?)"
        )
    else:
        status = "fits"
        reason = f"{where}: {need:.1f} of {usable:.1f} GiB usable per GPU"
    return FitReport(
        status=status,
        reason=reason,
        setup_label=setup.label(),
        gpu_name=gpu.name,
        breakdown=mem,
        min_free_gpu_bytes=min_free_gpu_bytes,
        warnings=tuple(warnings),
        checkpoint_bytes=ckpt,
        planned_tensor_bytes=mem.total_bytes
        - mem.framework_overhead_bytes
        - mem.fragmentation_bytes,
    )


def _tensor_bytes(spec: ModelSpec, setup: Setup, nodes: int, nproc_per_node: int) -> int | None:
    """Per-rank tensor bytes when no GPU is there to plan for (a CPU run): planned on a
    stand-in GPU, whose size does not change what the tensors weigh."""
    cluster = cluster_from_parts(
        find_gpu(STAND_IN_GPU),
        nodes,
        nproc_per_node,
        node_ram=None,
        network=None,
        nvme=None,
        source="stand-in",
    )
    try:
        return _tensors(estimate_memory(spec, cluster, setup))
    except PlannerInputError:
        return None


def _tensors(mem: MemoryBreakdown) -> int:
    """The planned peak less what is not a tensor (CUDA context, workspaces, fragments)."""
    return mem.total_bytes - mem.framework_overhead_bytes - mem.fragmentation_bytes


def _skipped(reason: str) -> FitReport:
    return FitReport("skipped", reason, None, None, None, None, (), None)


def _checkpoint_bytes(recipe: Recipe, spec: ModelSpec, trainable: int) -> int:
    """Saved weights (model dtype; adapters in fp32) + Adam's two fp32 moments, per
    checkpoint kept, plus the final weights. A floor for the disk check, not an exact size."""
    dtype_bytes = _DTYPE_BYTES[recipe.model.dtype]
    adapter = recipe.method.kind in ("lora", "qlora", "dora")
    weights = trainable * 4 if adapter else spec.params_total * dtype_bytes
    one = weights + trainable * 8
    kept = recipe.training.save_total_limit or 1
    return one * kept + weights
