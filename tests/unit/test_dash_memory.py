"""The Job screen's plan vs actual: the largest rank's peak from metrics.jsonl's per-rank
`memory` (reserved on CUDA, RSS on CPU) beside the planner's tensor bytes from the
launcher's state.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from launcher.job.store import JobDir, PlannedMemory
from tests.support.jobs import make_state
from tuneboard.dash.job_text import job_stats
from tuneboard.dash.state import DashState
from tuneboard.sources.codec import decode, encode, step_metrics
from tuneboard.sources.job_dir import JobDirSource
from tuneboard.sources.snapshots import JobInfo, MetricsSnapshot

GIB = 1024**3


def _line(memory: list[dict[str, object]]) -> dict[str, object]:
    return {"event": "train", "step": 7, "loss": 1.0, "memory": memory}


def _rank(rank: int, device: str, **peaks: int | None) -> dict[str, object]:
    """One entry of a metrics line's `memory`, as recipes/train/memory_peaks.py writes it."""
    return {"rank": rank, "node": "gpu0", "pid": 100 + rank, "device": device, **peaks}


def test_the_largest_ranks_peak_is_what_the_dashboard_shows() -> None:
    cuda = step_metrics(
        _line(
            [
                _rank(0, "cuda:0", reserved_peak_bytes=60 * GIB, rss_peak_bytes=3 * GIB),
                _rank(1, "cuda:1", reserved_peak_bytes=63 * GIB, rss_peak_bytes=3 * GIB),
            ]
        )
    )
    assert (cuda.memory_peak_bytes, cuda.memory_measure) == (63 * GIB, "reserved")
    cpu = step_metrics(_line([_rank(0, "cpu", reserved_peak_bytes=None, rss_peak_bytes=GIB)]))
    assert (cpu.memory_peak_bytes, cpu.memory_measure) == (GIB, "RSS")
    none = step_metrics({"step": 1})
    assert none.memory_peak_bytes is None and none.memory_measure is None
    # the recording format keeps both
    snap = MetricsSnapshot(1.0, (cuda,))
    assert decode(json.loads(json.dumps(encode(snap)))) == snap


def test_the_job_screen_sets_the_peak_against_the_plan(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "r.yaml").write_text("model:\n  name: llama-2-7b\n")
    planned = PlannedMemory("lora ZeRO-2 ckpt mb4", "A800-80GB", 70 * GIB, 60 * GIB)
    JobDir(tmp_path).write_state(make_state("j-0101-000000-aaaa", 1.0, planned=planned))
    line = _line([_rank(0, "cuda:0", reserved_peak_bytes=66 * GIB)])
    (tmp_path / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    state = DashState()
    state.apply(JobDirSource(tmp_path).poll())
    info = state.job.info
    assert isinstance(info, JobInfo) and info.planned_bytes == 60 * GIB
    text = job_stats(state).plain
    assert "mem peak 66.0 GiB reserved · plan 60.0 GiB (1.10x)" in text
    # nothing planned (a run tuneboard did not launch): the peak alone
    state.job.info = dataclasses.replace(info, planned_bytes=None)
    assert "plan" not in job_stats(state).plain.split("mem peak")[1]


def test_an_ended_job_shows_no_eta() -> None:
    from launcher.job.store import Progress
    from tuneboard.dash.job_text import job_header
    from tuneboard.render_launch import format_progress
    from tuneboard.sources.snapshots import StatusSnapshot

    state = DashState()
    state.apply([MetricsSnapshot(1.0, (step_metrics({"step": 5, "eta_s": 120.0}),))])
    state.apply([StatusSnapshot(1.0, "training")])
    assert "ETA" in job_header(state).plain
    for phase, raw in (("failed", None), ("done", None), (None, "stopped")):
        state.apply([StatusSnapshot(2.0, phase, raw_phase=raw)])  # type: ignore[arg-type]
        assert "ETA" not in job_header(state).plain
    progress = Progress(step=5, total_steps=10, eta_s=120.0)
    assert "ETA" in format_progress(progress)
    assert "ETA" not in format_progress(progress, ended=True)


def test_log_lines_name_their_node_once() -> None:
    from tuneboard.dash.log_view import log_line

    assert log_line("node0", "node0/3 loss 1.2", all_nodes=True) == "node0/3 loss 1.2"
    assert log_line("node0", "[tuneboard] done", all_nodes=True) == "node0 │ [tuneboard] done"
    assert log_line("node0", "[tuneboard] done", all_nodes=False) == "[tuneboard] done"


def test_the_compact_view_keeps_long_node_names_whole() -> None:
    from tuneboard.dash.cluster_rows import NODE_WIDTH, compact_columns, node_width

    assert node_width(["node00", "node01"]) == NODE_WIDTH  # short names: as before
    assert node_width(["127.0.0.1:2222"]) == len("● 127.0.0.1:2222")
    assert node_width(["x" * 80]) == 28  # capped: the history column still fits
    assert compact_columns(20, 8, node_width(["127.0.0.1:2222"]))[0].width == 16
