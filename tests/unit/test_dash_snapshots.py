"""Snapshot images of each screen at 120×40 and 80×24, from the shipped replay's first
130 s (node02 is silent then: one stale node) with the clock stopped there.

Update after an intended change: pytest tests/unit/test_dash_snapshots.py --snapshot-update
(the SVGs live in tests/unit/__snapshots__/test_dash_snapshots/; look at them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from textual.pilot import Pilot

from tests.conftest import ROOT
from tuneboard.dash.app import DashboardApp
from tuneboard.dash.config import DashConfig
from tuneboard.dash.plan_screen import PlanScreen
from tuneboard.sources.replay import read_records

pytest.importorskip("pytest_textual_snapshot", reason="needs pytest-textual-snapshot")

REPLAY = ROOT / "tests" / "data" / "replay-3x8-a800.jsonl"
AT = 1718000000.0 + 130


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The top bar shows the (replay) clock in local time: make that UTC everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fixture_app(mode: str) -> DashboardApp:
    initial = [s for t, s in read_records(REPLAY) if t <= AT]
    return DashboardApp(
        DashConfig(initial=initial, clock=lambda: AT, start_mode=mode, label="replay")
    )


async def _settle(pilot: Pilot[None]) -> None:
    await pilot.pause(0.2)


async def _plan_done(pilot: Pilot[None]) -> None:
    deadline = time.monotonic() + 20
    while True:
        screen = pilot.app.screen
        if isinstance(screen, PlanScreen) and screen.outcome is not None:
            break
        assert time.monotonic() < deadline
        await pilot.pause(0.05)
    await pilot.pause(0.2)


SIZES = [(120, 40), (80, 24)]


@pytest.mark.parametrize("size", SIZES, ids=["120x40", "80x24"])
@pytest.mark.parametrize(
    ("mode", "run_before"),
    [("cluster", _settle), ("job", _settle), ("plan", _plan_done)],
    ids=["cluster", "job", "plan"],
)
def test_screen(
    snap_compare: Callable[..., bool],
    mode: str,
    run_before: Callable[[Pilot[None]], object],
    size: tuple[int, int],
) -> None:
    assert snap_compare(fixture_app(mode), terminal_size=size, run_before=run_before)


def test_compact_cluster_and_help(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(
        fixture_app("cluster"), press=["c", "question_mark"], terminal_size=(120, 40)
    )
