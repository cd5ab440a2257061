"""The launcher's job state (launcher/job/store.py) as the Job screen's status.

There is one definition of a job's state and its nodes: `launcher.job.store.JobState`.
The dashboard reads `state.json` through it, so a field the launcher renames is a type
error here, not a key the dashboard silently stops finding. The launcher's job status
maps onto the phases the Job screen shows.
"""

from __future__ import annotations

from launcher.job.store import JobState
from tuneboard.sources.snapshots import Phase, StatusSnapshot

_PHASE: dict[str, Phase] = {
    "starting": "loading",
    "running": "training",
    "succeeded": "done",
    "failed": "failed",
}


def status_from_state(state: JobState, time_s: float) -> StatusSnapshot:
    phase = _PHASE.get(state.status)
    error = None
    cause = state.root_cause
    if cause is not None and cause.reason:
        error = f"{cause.node}: {cause.reason}"
    elif state.message is not None:
        error = state.message
    return StatusSnapshot(
        time_s=time_s,
        phase=phase,
        error=error,
        raw_phase=None if phase is not None else state.status,
    )


def recipe_name(state: JobState) -> str:
    """The recipe's file name (the launcher copies it into the job directory)."""
    return state.recipe_file.replace("\\", "/").rsplit("/", 1)[-1]
