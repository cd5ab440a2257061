"""What deserves the user's attention, computed from the state at a moment. No textual.

- loss is NaN or infinite (error)
- the job failed (error), with the program's error line
- stalled: no new step for `stall_after_s` while the GPUs draw little power (error); with
  no GPU data, a warning that no step came for that long
- a GPU's memory is near full (warning), uncorrectable ECC errors or a lost GPU (error)
- a node is stale (silent for a few of its sampling intervals: warning) or lost
  (silent past `lost_after_s`, or its agent stream ended: error)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from tuneboard.dash.format import duration
from tuneboard.dash.state import DashNode, DashState

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Thresholds:
    stall_after_s: float = 300.0
    #: A GPU drawing less than this fraction of its power limit counts as idle.
    low_power_fraction: float = 0.3
    memory_full_fraction: float = 0.97
    #: A node is stale after this many of its usual sampling gaps without news...
    stale_gaps: float = 3.0
    #: ...and at least this many seconds (the dashboard's own interval × 3, say).
    stale_min_s: float = 5.0
    lost_after_s: float = 60.0


@dataclass(frozen=True)
class Alert:
    key: str
    level: Level
    text: str


def node_staleness(node: DashNode, now: float, t: Thresholds) -> Literal["ok", "stale", "lost"]:
    if node.connected is False:
        return "lost"
    silent = node.silent_for(now)
    if silent is None:
        return "ok"
    if silent > t.lost_after_s:
        return "lost"
    limit = max(t.stale_min_s, t.stale_gaps * (node.gap_s or 0.0))
    return "stale" if silent > limit else "ok"


def compute_alerts(state: DashState, now: float, t: Thresholds) -> list[Alert]:
    alerts: list[Alert] = []
    job = state.job
    last = job.last
    if last is not None and last.loss is not None and not math.isfinite(last.loss):
        alerts.append(Alert("nan", "error", f"loss is {last.loss} at step {last.step}"))
    status = job.status
    if status is not None and status.phase == "failed":
        alerts.append(Alert("failed", "error", f"job failed: {status.error or 'no error given'}"))
    alerts.extend(_stall(state, now, t))
    for node in state.nodes.values():
        health = node_staleness(node, now, t)
        silent = duration(node.silent_for(now))
        if health == "lost":
            why = node.message or f"silent for {silent}"
            alerts.append(Alert(f"lost:{node.name}", "error", f"{node.name} lost ({why})"))
        elif health == "stale":
            alerts.append(
                Alert(f"stale:{node.name}", "warning", f"{node.name} silent for {silent}")
            )
        for gpu in node.gpus.values():
            s = gpu.sample
            where = f"{node.name} GPU{s.index}"
            if s.error is not None:
                alerts.append(Alert(f"gpu:{where}", "error", f"{where}: {s.error}"))
            if s.ecc_uncorrected_errors:
                alerts.append(
                    Alert(
                        f"ecc:{where}",
                        "error",
                        f"{where}: {s.ecc_uncorrected_errors} uncorrectable ECC errors",
                    )
                )
            if s.memory_used_bytes is not None and s.memory_total_bytes:
                used = s.memory_used_bytes / s.memory_total_bytes
                if used >= t.memory_full_fraction:
                    alerts.append(
                        Alert(f"mem:{where}", "warning", f"{where} memory {used:.0%} full")
                    )
    return alerts


def _stall(state: DashState, now: float, t: Thresholds) -> list[Alert]:
    job = state.job
    status = job.status
    if job.last_step_at_s is None or (status is not None and status.phase != "training"):
        return []
    if job.last is not None and job.last.total_steps and job.last.step >= job.last.total_steps:
        return []
    quiet = now - job.last_step_at_s
    if quiet < t.stall_after_s:
        return []
    fractions = [
        g.sample.power_mw / g.sample.power_limit_mw
        for n in state.nodes.values()
        for g in n.gpus.values()
        if g.sample.power_mw is not None and g.sample.power_limit_mw
    ]
    since = f"no new step for {duration(quiet)}"
    if not fractions:
        return [Alert("stall", "warning", since)]
    mean = sum(fractions) / len(fractions)
    if mean < t.low_power_fraction:
        return [Alert("stall", "error", f"stalled: {since}, GPUs at {mean:.0%} of power limit")]
    return []
