"""Pilot tests: every screen and key path, fed by the shipped replay and the fake NVML."""

from __future__ import annotations

from pathlib import Path
from typing import ParamSpec

import pynvml
import pytest
from textual.widgets import Input, Log

from tests.conftest import ROOT
from tests.support.pilot import sync, wait_for
from tuneboard.dash.app import DashboardApp
from tuneboard.dash.cluster_screen import ClusterScreen
from tuneboard.dash.config import DashConfig
from tuneboard.dash.job_screen import JobScreen
from tuneboard.dash.keyed_table import KeyedTable
from tuneboard.dash.modals import ConfirmScreen, HelpScreen, PathScreen
from tuneboard.dash.plan_screen import PlanScreen
from tuneboard.sources.fake_nvml import FakeGpu, FakeNvml
from tuneboard.sources.gpu_sources import FakeClusterSource, LocalGpuSource
from tuneboard.sources.replay import ReplaySource, read_records
from tuneboard.sources.snapshots import GpuSnapshot

REPLAY = ROOT / "tests" / "data" / "replay-3x8-a800.jsonl"
SIZE = (120, 40)
P = ParamSpec("P")


def replay_app(speed: float = 400.0, **config: object) -> DashboardApp:
    source = ReplaySource(REPLAY, speed=speed, interval_s=0.05)
    return DashboardApp(
        DashConfig(sources=[source], clock=source.virtual_time, label="replay", **config)  # type: ignore[arg-type]
    )


def _replay_done(app: DashboardApp) -> bool:
    status = app.state.job.status
    return status is not None and status.phase == "done" and app.state.gpu_count() == 24


@sync
async def test_replay_cluster_job_plan_help_quit(tmp_path: Path) -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: _replay_done(app))
        await pilot.pause(0.2)
        assert isinstance(app.screen, ClusterScreen)
        table = app.screen.query_one(KeyedTable)
        keys = [r.key.value for r in table.ordered_rows]
        assert keys[0] == "n:node00" and keys[1] == "g:node00:0" and len(keys) == 27
        assert "A800" in str(table.get_row("n:node00")[0])
        assert "node00 GPU" not in str(app.screen.query_one("#details").render())
        await pilot.press("down")  # the panel follows the cursor
        assert "node00 GPU0 · NVIDIA A800-SXM4-80GB" in str(
            app.screen.query_one("#details").render()
        )

        await pilot.press("2")
        assert isinstance(app.screen, JobScreen)
        await pilot.pause(0.1)
        header = str(app.screen.query_one("#job-header").render())
        assert "llama2-13b-sft" in header and "done" in header and "step 160/160" in header
        stats = str(app.screen.query_one("#job-stats").render())
        assert "MFU 3" in stats and "tok/s" in stats  # ~35 % on 24 A800s
        plot = str(app.screen.query_one("#loss-plot").render())
        assert "⠀" not in plot and any("\u2801" <= ch <= "\u28ff" for ch in plot)
        log = app.screen.query_one(Log)
        assert any("Running training" in line for line in log.lines)
        await pilot.press("slash")
        await pilot.press(*"NCCL WARN")
        await pilot.pause(0.1)
        assert log.lines and all("NCCL WARN" in line for line in log.lines)
        field = app.screen.query_one("#log-filter", Input)
        await pilot.press("slash")  # in the field, "/" is typed, not a jump to the field
        assert field.value == "NCCL WARN/" and field.has_focus
        await pilot.press("backspace", "escape")
        assert field.value == "NCCL WARN" and not field.has_focus

        await pilot.press("3")
        assert isinstance(app.screen, PlanScreen)
        plan_screen = app.screen
        await wait_for(pilot, lambda: plan_screen.outcome is not None)
        assert plan_screen.query_one("#plan-gpus").value == "3x8xA800"  # type: ignore[attr-defined]
        assert plan_screen.outcome is not None and plan_screen.outcome.plan is not None

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, PlanScreen)
        await pilot.press("1")
        assert isinstance(app.screen, ClusterScreen)
        await pilot.press("q")
    assert app.return_code == 0
    assert all(not p.running for p in app.pollers)


@sync
async def test_log_filter_by_node() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: _replay_done(app))
        await pilot.press("2")
        await pilot.pause(0.1)
        select = app.screen.query_one("#log-node")
        select.value = "node02"  # type: ignore[attr-defined]
        await pilot.pause(0.1)
        lines = app.screen.query_one(Log).lines
        assert lines and all("node02" in line for line in lines)
        assert not any("node00" in line for line in lines)


@sync
async def test_plan_form_updates_as_you_type_and_saves_a_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = DashboardApp(DashConfig(start_mode="plan"))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        await wait_for(pilot, lambda: screen.outcome is not None)
        assert screen.outcome is not None and screen.outcome.error is not None  # no GPUs here
        assert "GPUs" in screen.outcome.error
        await pilot.press("e")  # into the form: the model field
        await pilot.press("tab")  # GPUs
        await pilot.press(*"8xA800")
        await wait_for(
            pilot, lambda: screen.outcome is not None and screen.outcome.plan is not None
        )
        before = screen.computations
        # A debounce longer than any gap between these keys, even on a loaded machine:
        # the four edits must then give exactly one computation.
        monkeypatch.setattr("tuneboard.dash.plan_screen.DEBOUNCE_S", 3.0)
        await pilot.press("tab", "tab")  # method select -> seq len
        await pilot.press("backspace", "backspace", "backspace", "backspace", *"4096")
        await wait_for(
            pilot,
            lambda: screen.outcome is not None and screen.outcome.form.seq_len == "4096",
        )
        assert screen.computations == before + 1  # debounced: one plan for four keys
        table = screen.query_one("#plan-table", KeyedTable)
        assert table.row_count > 0 and str(table.get_row_at(0)[0]) == "★"
        await pilot.press("escape")
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, PathScreen)
        await pilot.press("enter")  # accept recipe.yaml
        await wait_for(pilot, lambda: (tmp_path / "recipe.yaml").exists())
        text = (tmp_path / "recipe.yaml").read_text()
        assert text.startswith("# tuneboard launch recipe.yaml") and "seq_len: 4096" in text


@sync
async def test_stop_job_confirms_and_calls_back() -> None:
    calls: list[str] = []

    def stop() -> str:
        calls.append("stop")
        return "stopped on 3 nodes"

    app = replay_app(stop_job=stop, start_mode="job")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert calls == [] and isinstance(app.screen, JobScreen)
        await pilot.press("x")
        await pilot.press("y")
        await wait_for(pilot, lambda: calls == ["stop"])
        await wait_for(
            pilot, lambda: any("stopped on 3 nodes" in str(n.message) for n in app._notifications)
        )


@sync
async def test_stop_without_a_launcher_job_only_explains() -> None:
    app = replay_app(start_mode="job")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("x")
        assert isinstance(app.screen, JobScreen)
        assert any("nothing to stop" in str(n.message) for n in app._notifications)


@sync
async def test_fake_nvml_cluster_compact_toggle_and_key_updates() -> None:
    app = DashboardApp(DashConfig(sources=[FakeClusterSource(3, 8, interval_s=0.1)]))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state.gpu_count() == 24 and app.redraws >= 3)
        table = app.screen.query_one(KeyedTable)
        rebuilds = table.rebuilds
        await wait_for(pilot, lambda: table.cell_updates > 20)
        assert table.rebuilds == rebuilds  # updated by key, cell by cell, not rebuilt
        assert table.row_count == 27
        await pilot.press("c")
        await pilot.pause(0.1)
        assert table.row_count == 3
        assert len(str(table.get_row("n:node01")[1])) == 8  # a block per GPU


@sync
async def test_compact_by_default_above_64_gpus() -> None:
    app = DashboardApp(DashConfig(sources=[FakeClusterSource(64, 8, interval_s=0.2)]))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state.gpu_count() == 512)
        await pilot.pause(0.1)
        table = app.screen.query_one(KeyedTable)
        assert table.row_count == 64
        summary = str(app.screen.query_one("#cluster-summary").render())
        assert "64 nodes · 512 GPUs" in summary


@sync
async def test_no_driver_says_no_nvidia_gpu_here() -> None:
    api = FakeNvml([FakeGpu()], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    app = DashboardApp(DashConfig(sources=[LocalGpuSource(api=api, node="laptop", interval_s=0.1)]))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "laptop" in app.state.nodes)
        await pilot.pause(0.1)
        summary = str(app.screen.query_one("#cluster-summary").render())
        assert "no NVIDIA GPU here" in summary
        await pilot.press("2", "3", "1")  # every screen still works
        assert isinstance(app.screen, ClusterScreen)


@sync
async def test_stale_node_and_nan_alert_are_shown() -> None:
    records = [s for t, s in read_records(REPLAY) if t <= 1718000000 + 60]
    last = max(s.time_s for s in records if isinstance(s, GpuSnapshot))
    from tuneboard.sources.snapshots import MetricsSnapshot, StepMetrics

    nan = MetricsSnapshot(last, (StepMetrics(step=99, total_steps=160, loss=float("nan")),))
    app = DashboardApp(
        DashConfig(initial=[*records, nan], clock=lambda: last + 20, start_mode="job")
    )
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.1)
        alerts = str(app.screen.query_one("#alerts").render())
        assert "loss is nan at step 99" in alerts and "silent for" in alerts
        await pilot.press("1")
        summary = str(app.screen.query_one("#cluster-summary").render())
        assert "3 stale" in summary


@pytest.mark.parametrize("mode", ["cluster", "job", "plan"])
@sync
async def test_every_screen_fits_80x24(mode: str) -> None:
    app = replay_app(start_mode=mode)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.state.gpu_count() == 24)
        await pilot.pause(0.3)
        top = str(app.screen.query_one("#topbar").render())
        assert "1 Cluster" in top and "3 Plan" in top and "24 GPUs" in top
        assert app.screen.query_one("Footer").region.y == 23
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)


@sync
async def test_record_then_replay_through_the_same_path(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    app = DashboardApp(DashConfig(sources=[FakeClusterSource(2, 4, interval_s=0.05)], record=rec))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.redraws >= 5)
    recorded = [s for _, s in read_records(rec) if isinstance(s, GpuSnapshot)]
    assert len(recorded) >= 4 and {s.node for s in recorded} == {"node00", "node01"}
    source = ReplaySource(rec, speed=50, interval_s=0.02)
    again = DashboardApp(DashConfig(sources=[source], clock=source.virtual_time))
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: source.finished)
        await pilot.pause(0.1)
        assert again.state.nodes["node01"].gpus[3].sample == recorded[-1].gpus[3] or (
            again.state.nodes["node00"].gpus[3].sample == recorded[-1].gpus[3]
        )
        assert again.state.gpu_count() == 8


@sync
async def test_the_help_fits_an_80x24_terminal_without_scrolling() -> None:
    app = replay_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        assert isinstance(app.screen, HelpScreen)
        box = app.screen.query_one("#help-box")
        assert box.max_scroll_y == 0 and box.max_scroll_x == 0
        text = str(app.screen.query_one("#help-text").render())
        assert "closes this help" in text
