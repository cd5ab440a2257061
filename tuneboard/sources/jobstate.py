"""The launcher's `state.json` (launcher/job/store.py), read loosely for the dashboard.

Only a few keys are used (status, name, nodes[].nproc, root_cause, message, recipe_file),
read as plain JSON, so the dashboard keeps working whatever else the schema grows.
The launcher's job status maps onto the phases the Job screen shows.
"""

from __future__ import annotations

from typing import Any

from tuneboard.sources.snapshots import Phase, StatusSnapshot

_PHASE: dict[str, Phase] = {
    "starting": "loading",
    "running": "training",
    "succeeded": "done",
    "failed": "failed",
}


def status_from_state(data: dict[str, Any], time_s: float) -> StatusSnapshot:
    raw = data.get("status")
    phase = _PHASE.get(raw) if isinstance(raw, str) else None
    error = None
    cause = data.get("root_cause")
    if isinstance(cause, dict) and cause.get("reason"):
        error = f"{cause.get('node', '?')}: {cause['reason']}"
    elif isinstance(data.get("message"), str):
        error = data["message"]
    return StatusSnapshot(
        time_s=time_s,
        phase=phase,
        error=error,
        raw_phase=None if phase is not None or raw is None else str(raw),
    )


def world_size(data: dict[str, Any]) -> int | None:
    """GPUs of the job: the sum of every node's nproc."""
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        return None
    procs = [n.get("nproc") for n in nodes if isinstance(n, dict)]
    counts = [p for p in procs if isinstance(p, int)]
    if not counts or len(counts) != len(nodes):
        return None
    return sum(counts)


def recipe_name(data: dict[str, Any]) -> str | None:
    """The recipe's file name (the launcher copies it into the job directory)."""
    value = data.get("recipe_file")
    return value.replace("\\", "/").rsplit("/", 1)[-1] if isinstance(value, str) else None
