"""What a job's recipe says that the dashboard can use: model size -> FLOPs per token (MFU).

Reads the recipe YAML loosely (model.name, training.seq_len, method.kind, cluster.nodes
and gpus_per_node) rather than
validating it: the dashboard shows what it can and never refuses a job directory. The
model is resolved only offline (catalog, size like `7b`, local config); an HF id that is
not in the catalog is not fetched from the dashboard, and MFU is then not shown.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from planner.errors import PlannerInputError
from planner.model_catalog import find_catalog_entry
from planner.models import resolve_model
from planner.timing import forward_flops_per_token
from tuneboard.sources.snapshots import JobInfo

_HUB_ID = re.compile(r"[\w.\-]+/[\w.\-]+")


def model_flops_per_token(model: str, seq_len: int, method: str) -> tuple[int, float] | None:
    """(params, model FLOPs per trained token) for MFU, or None if the model is unknown.

    Model FLOPs as in the PaLM paper's MFU (appendix B): forward plus backward without
    recomputation: 3 × forward for full and freeze (weight and input gradients), 2 ×
    forward for adapters (input gradients only; the adapters' own are negligible).
    """
    hub_only = _HUB_ID.fullmatch(model) and find_catalog_entry(model) is None
    if hub_only and not Path(model).expanduser().exists():
        return None  # would need the network
    try:
        spec = resolve_model(model)
    except PlannerInputError:
        return None
    fwd = forward_flops_per_token(spec, seq_len)
    factor = 3.0 if method in ("full", "freeze") else 2.0
    return spec.params_total, factor * fwd


def job_info_from_recipe(path: Path, time_s: float) -> JobInfo | None:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    model = _get(data, "model", "name")
    if not isinstance(model, str):
        return None
    seq_len = _get(data, "training", "seq_len")
    method = _get(data, "method", "kind")
    name = data.get("name") if isinstance(data.get("name"), str) else path.parent.name
    flops = model_flops_per_token(
        model,
        seq_len if isinstance(seq_len, int) and seq_len > 0 else 2048,
        method if isinstance(method, str) else "full",
    )
    return JobInfo(
        time_s=time_s,
        name=name,
        model=model,
        params=None if flops is None else flops[0],
        flops_per_token=None if flops is None else flops[1],
        gpus=_gpus(data),
    )


def _gpus(data: dict[str, Any]) -> int | None:
    """GPUs of the job: cluster.nodes × cluster.gpus_per_node (8 unless given)."""
    cluster = data.get("cluster")
    if not isinstance(cluster, dict) or not isinstance(cluster.get("nodes"), list):
        return None
    per_node = cluster.get("gpus_per_node", 8)
    return len(cluster["nodes"]) * per_node if isinstance(per_node, int) else None


def _get(data: dict[str, Any], section: str, key: str) -> object:
    sub = data.get(section)
    return sub.get(key) if isinstance(sub, dict) else None
