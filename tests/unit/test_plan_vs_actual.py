"""Plan vs actual: the recipes' per-rank peaks (metrics.jsonl `memory`) reach state.json
through the launcher's metrics mirror, the fit check's plan is kept at launch, and
`tuneboard status` sets one against the other (RSS standing in on a CPU run)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.console import Console

from launcher.job.launch import planned_memory
from launcher.job.log_mirror import JobLog
from launcher.job.store import JobDir, PlannedMemory, Progress, RankMemory, rank_memory
from launcher.preflight.fit import check_fit, model_spec
from recipes.schema import parse_recipe
from tests.support.jobs import make_state
from tuneboard.render_launch import render_status
from tuneboard.render_memory import memory_rows

GIB = 1024**3


def _peak(rank: int, device: str = "cuda:0", **values: int | None) -> dict[str, object]:
    return {"rank": rank, "node": f"gpu{rank // 8}", "pid": 100 + rank, "device": device, **values}


def test_a_metrics_line_carries_every_ranks_peaks_into_progress(tmp_path: Path) -> None:
    job = JobDir.create("j-0101-000000-aaaa", tmp_path)
    log = JobLog(job, ["gpu0"])
    log.open()
    line = {
        "event": "train",
        "step": 5,
        "total_steps": 10,
        "loss": 1.5,
        "memory": [
            _peak(1, allocated_peak_bytes=9 * GIB, reserved_peak_bytes=11 * GIB),
            _peak(0, allocated_peak_bytes=10 * GIB, reserved_peak_bytes=12 * GIB),
            {"rank": "x", "node": "gpu0", "device": "cuda:0"},  # malformed: left out
            "not a rank",
        ],
    }
    progress = log.metrics([json.dumps(line)])
    log.close()
    assert progress is not None
    assert [m.rank for m in progress.memory] == [0, 1]
    assert progress.memory[0].reserved_peak_bytes == 12 * GIB
    assert progress.memory[1].allocated_peak_bytes == 9 * GIB
    assert rank_memory(None) == () and rank_memory({"rank": 0}) == ()


def test_plan_and_peaks_survive_state_json(tmp_path: Path) -> None:
    planned = PlannedMemory("lora ZeRO-2 ckpt mb4", "A800-80GB", 70 * GIB, 60 * GIB)
    memory = (RankMemory(0, "gpu0", "cuda:0", 50 * GIB, 62 * GIB, 66 * GIB, 3 * GIB),)
    state = make_state("j-0101-000000-bbbb", 1.0, planned=planned)
    state = dataclasses.replace(state, progress=Progress(step=3, memory=memory))
    job = JobDir.create(state.id, tmp_path)
    job.write_state(state)
    again = job.read_state()
    assert again.planned == planned
    assert again.progress is not None and again.progress.memory == memory


def _rendered(state: object) -> str:
    console = Console(width=120, record=True, color_system=None)
    render_status(console, state, "succeeded", "/jobs/x")  # type: ignore[arg-type]
    return console.export_text()


def test_status_sets_reserved_peaks_against_the_plan_on_cuda() -> None:
    planned = PlannedMemory("full ZeRO-3 ckpt mb16", "A800-80GB", 67 * GIB, 60 * GIB)
    memory = (
        RankMemory(0, "gpu0", "cuda:0", 55 * GIB, 63 * GIB, 66 * GIB, 4 * GIB),
        RankMemory(1, "gpu0", "cuda:1", 54 * GIB, 66 * GIB, 69 * GIB, 4 * GIB),
    )
    state = dataclasses.replace(
        make_state("j-0101-000000-cccc", 1.0, planned=planned),
        progress=Progress(step=10, memory=memory),
    )
    rows = memory_rows(state)
    assert [r.measure for r in rows] == ["reserved", "reserved"]
    assert rows[1].ratio == 66 / 60
    text = _rendered(state)
    assert "memory planned for full ZeRO-3 ckpt mb16 on A800-80GB: 67.00 GiB per GPU" in text
    assert "66.00 (reserved)" in text and "1.10x" in text and "69.00" in text
    assert "CPU run" not in text


def test_status_says_rss_stands_in_on_a_cpu_run() -> None:
    planned = PlannedMemory("lora ZeRO-0 no-ckpt mb8", None, None, GIB // 2)
    memory = (RankMemory(0, "vm", "cpu", None, None, None, GIB),)
    state = dataclasses.replace(
        make_state("j-0101-000000-dddd", 1.0, planned=planned),
        progress=Progress(step=10, memory=memory),
    )
    text = _rendered(state)
    assert "(CPU run: tensors only): 0.50 GiB of tensors" in text
    assert "1.00 (RSS)" in text and "2.00x" in text
    assert "peak RSS stands in for GPU memory" in text
    # nothing planned and nothing measured: no memory block at all
    assert "memory" not in _rendered(make_state("j-0101-000000-eeee", 1.0))


def test_a_cpu_launch_is_still_planned_tensor_by_tensor() -> None:
    recipe = parse_recipe(
        {
            "model": {
                "name": "tiny",
                "tiny": {
                    "config": {
                        "model_type": "llama",
                        "hidden_size": 64,
                        "intermediate_size": 128,
                        "num_hidden_layers": 2,
                        "num_attention_heads": 4,
                    },
                    "vocab_size": 400,
                },
            },
            "method": {"kind": "lora"},
        }
    )
    fit = check_fit(
        recipe,
        model_spec(recipe),
        nodes=1,
        nproc_per_node=2,
        gpu_name=None,
        gpu_memory_bytes=None,
        min_free_gpu_bytes=None,
        node_ram_bytes=None,
        cpu=True,
    )
    assert fit.status == "skipped" and fit.planned_tensor_bytes is not None
    planned = planned_memory(fit)
    assert planned is not None and planned.gpu_name is None and planned.total_bytes is None
    assert planned.tensor_bytes == fit.planned_tensor_bytes > 0
