"""The dashboard's plain-Python layer: state folding, alerts, MFU, text, plots, plan form."""

from __future__ import annotations

import dataclasses
import math

import pytest

from tuneboard.dash import format as fmt
from tuneboard.dash.alerts import Thresholds, compute_alerts, node_staleness
from tuneboard.dash.braille import Series, column_ranges, plot
from tuneboard.dash.cluster_rows import gpu_details, node_row_compact, node_rows_detailed
from tuneboard.dash.plan_form import PlanForm, compute_plan, detected_gpus, plan_rows
from tuneboard.dash.state import DashState
from tuneboard.sources.fake_nvml import fake_node
from tuneboard.sources.nvml_sampler import NvmlSampler
from tuneboard.sources.snapshots import (
    GpuSnapshot,
    JobInfo,
    MetricsSnapshot,
    SourceStatus,
    StatusSnapshot,
    StepMetrics,
)

T = Thresholds()


def _gpus(node: str, t: float, gpus: int = 8, power_mw: float | None = None) -> GpuSnapshot:
    """Fake-NVML GPUs of a busy node sampled at `t`; `power_mw` overrides their power."""
    snap = NvmlSampler(fake_node(gpus, clock=lambda: t), node, clock=lambda: t).sample()
    if power_mw is not None:
        snap = dataclasses.replace(
            snap, gpus=tuple(dataclasses.replace(g, power_mw=power_mw) for g in snap.gpus)
        )
    return snap


def _steps(*losses: float, t: float = 0.0, start: int = 1) -> MetricsSnapshot:
    return MetricsSnapshot(
        t,
        tuple(
            StepMetrics(step=start + i, total_steps=100, loss=loss, tokens_per_s=33_000.0)
            for i, loss in enumerate(losses)
        ),
    )


def test_ema_is_seeded_with_the_first_loss_and_skips_nan() -> None:
    state = DashState()
    state.apply([_steps(2.0, 1.0, float("nan"), 1.0)])
    ema = state.job.loss_ema
    assert ema[0] == 2.0 and ema[1] == pytest.approx(1.9)
    assert ema[2] == pytest.approx(1.9)  # NaN leaves the EMA where it was
    assert ema[3] == pytest.approx(0.9 * 1.9 + 0.1)


def test_a_restart_from_an_earlier_step_replaces_the_tail() -> None:
    state = DashState()
    state.apply([_steps(3.0, 2.0, 1.0)])
    state.apply([_steps(5.0, t=1.0, start=2)])
    assert [r.step for r in state.job.steps] == [1, 2]
    assert state.job.loss_ema[-1] == pytest.approx(0.9 * 3.0 + 0.1 * 5.0)


def test_nan_loss_and_failed_job_alert() -> None:
    state = DashState()
    state.apply([_steps(1.2, float("nan")), StatusSnapshot(0.0, "failed", "CUDA OOM")])
    texts = {a.key: (a.level, a.text) for a in compute_alerts(state, 1.0, T)}
    assert texts["nan"] == ("error", "loss is nan at step 2")
    assert texts["failed"] == ("error", "job failed: CUDA OOM")


def test_stall_needs_quiet_steps_and_idle_gpus() -> None:
    state = DashState()
    state.apply([StatusSnapshot(0.0, "training"), _steps(1.0, t=0.0)])
    busy = _gpus("n0", 400.0)
    state.apply([busy])
    assert not [a for a in compute_alerts(state, 400.0, T) if a.key == "stall"]  # busy GPUs
    state.apply([_gpus("n0", 401.0, power_mw=40_000.0)])  # 10 % of the limit
    stall = [a for a in compute_alerts(state, 401.0, T) if a.key == "stall"]
    assert stall and stall[0].level == "error" and "no new step for 6m41s" in stall[0].text
    assert not [a for a in compute_alerts(state, 200.0, T) if a.key == "stall"]  # too soon


def test_memory_near_full_and_ecc_alerts() -> None:
    state = DashState()
    snap = _gpus("n0", 10.0, gpus=2)
    total = snap.gpus[1].memory_total_bytes
    assert total is not None
    full = dataclasses.replace(
        snap.gpus[1], memory_used_bytes=int(total * 0.985), ecc_uncorrected_errors=2
    )
    state.apply([dataclasses.replace(snap, gpus=(snap.gpus[0], full))])
    keys = {a.key: a.text for a in compute_alerts(state, 10.0, T)}
    assert keys["mem:n0 GPU1"] == "n0 GPU1 memory 98% full"
    assert "2 uncorrectable ECC errors" in keys["ecc:n0 GPU1"]
    assert "mem:n0 GPU0" not in keys


def test_stale_then_lost_follows_the_nodes_own_cadence() -> None:
    state = DashState()
    for t in (0.0, 3.0, 6.0, 9.0):
        state.apply([_gpus("n0", t, gpus=1)])
    node = state.nodes["n0"]
    assert node.gap_s == pytest.approx(3.0)
    assert node_staleness(node, 12.0, T) == "ok"
    assert node_staleness(node, 19.5, T) == "stale"  # 10.5 s > 3 × 3 s
    assert node_staleness(node, 80.0, T) == "lost"
    keys = [a.key for a in compute_alerts(state, 19.5, T)]
    assert "stale:n0" in keys
    state.apply([SourceStatus("agent:n0", "n0", 20.0, False, "agent stream ended")])
    lost = [a for a in compute_alerts(state, 20.0, T) if a.key == "lost:n0"]
    assert lost and lost[0].text == "n0 lost (agent stream ended)"


def test_mfu_from_job_info_and_the_gpus_catalog_peak() -> None:
    state = DashState()
    state.apply([_gpus("n0", 0.0), _steps(1.0)])
    assert state.mfu() is None  # no model known
    state.apply([JobInfo(0.0, "j", "m", 13_000_000_000, 8.0e10, None)])
    assert state.mfu() is None  # nor how many GPUs the job runs on
    state.apply([JobInfo(0.0, "j", "m", 13_000_000_000, 8.0e10, 24)])
    # 33k tokens/s × 8e10 FLOPs / (24 × 312e12): A800's dense bf16 peak from the catalog
    assert state.mfu() == pytest.approx(33_000 * 8.0e10 / (24 * 312e12))


def test_format_never_shows_none() -> None:
    assert fmt.percent(None) == fmt.memory(None, None) == fmt.watts(None) == "–"
    assert fmt.duration(None) == fmt.rate(None) == fmt.number(None) == "–"
    assert fmt.number(float("nan")) == "NaN"
    assert fmt.memory(61 << 30, 80 << 30) == "61.0/80G"
    assert fmt.watts(312_000, 400_000) == "312/400W"
    assert fmt.duration(3725) == "1h02m" and fmt.duration(65) == "1m05s"
    assert fmt.sparkline([0, 50, 100, None], 5) == " ▁▅█ "
    assert fmt.rate(33_456.0) == "33.5k"


def test_braille_plot_draws_a_falling_line_top_left_to_bottom_right() -> None:
    values = [10.0 - i for i in range(11)]
    lines = plot([Series(values, "cyan")], 10, 3, (0.0, 10.0))
    assert len(lines) == 3 and all(len(line.plain) == 10 for line in lines)
    assert lines[0].plain[0] != " " and lines[0].plain[-1] == " "
    assert lines[-1].plain[-1] != " " and lines[-1].plain[0] == " "
    ranges = column_ranges([1.0, None, 3.0, float("inf")], 4)
    assert ranges[0] == (1.0, 1.0) and all(r is None or math.isfinite(r[1]) for r in ranges)


def test_cluster_rows_detailed_and_compact() -> None:
    state = DashState()
    for n in range(64):
        state.apply([_gpus(f"node{n:02d}", 0.0)])
    node = state.nodes["node00"]
    detailed = node_rows_detailed(node, "ok", T, 20)
    assert [r.key for r in detailed][:2] == ["n:node00", "g:node00:0"] and len(detailed) == 9
    compact = [node_row_compact(n, "ok", T, 20) for n in state.nodes.values()]
    assert len(compact) == 64
    blocks = compact[0].cells[1]
    assert len(str(blocks)) == 8  # one block per GPU


def test_no_gpu_node_row_says_so() -> None:
    state = DashState()
    state.apply([GpuSnapshot("here", 0.0, (), error="no NVIDIA GPU here (NVML: not found)")])
    row = node_rows_detailed(state.nodes["here"], "ok", T, 10)[0]
    assert str(row.cells[1]) == "no GPU"
    assert "no NVIDIA GPU here" in gpu_details(state.nodes["here"], None, 0.0)


def test_plan_form_computes_and_names_bad_input() -> None:
    good = compute_plan(PlanForm(model="llama-2-7b", gpus="8xA800", method="lora"))
    assert good.error is None and good.plan is not None and good.plan.recommendation is not None
    assert all(c.setup.method == "lora" for c in good.plan.candidates)
    rows = plan_rows(good.plan, wide=False)
    assert rows[0].cells[0].plain == "★"  # type: ignore[union-attr]
    bad = compute_plan(PlanForm(model="llama-2-7b", gpus="8xB9000"))
    assert bad.plan is None and bad.error is not None and "B9000" in bad.error
    hub = compute_plan(PlanForm(model="someorg/some-model", gpus="8xA800"))
    assert hub.error is not None and "press enter" in hub.error
    assert "seq len" in (compute_plan(PlanForm("7b", "8xA800", seq_len="0")).error or "")


def test_detected_gpus_from_what_the_dashboard_sees() -> None:
    state = DashState()
    assert detected_gpus(state) is None
    state.apply([_gpus(f"n{i}", 0.0) for i in range(3)])
    assert detected_gpus(state) == "3x8xA800"
