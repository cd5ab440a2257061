"""FileTail and the job-directory source: partial lines, rotation, truncation, discovery."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from launcher.job.store import JobDir, RootCause
from tests.support.jobs import make_state
from tuneboard.sources.filetail import FileTail
from tuneboard.sources.job_dir import JobDirSource
from tuneboard.sources.snapshots import JobInfo, LogSnapshot, MetricsSnapshot, StatusSnapshot


def _append(path: Path, data: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)


def test_partial_last_line_is_held_until_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    tail = FileTail(path)
    assert tail.read_lines() == []  # not there yet
    _append(path, '{"step": 1}\n{"step": 2, "lo')
    assert tail.read_lines() == ['{"step": 1}']
    assert tail.read_lines() == []
    _append(path, 'ss": 1.5}\n')
    assert tail.read_lines() == ['{"step": 2, "loss": 1.5}']


def test_utf8_character_split_across_writes(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    tail = FileTail(path)
    data = "progress █ done\n".encode()
    cut = data.index("█".encode()) + 1
    path.write_bytes(data[:cut])
    assert tail.read_lines() == []
    with open(path, "ab") as f:
        f.write(data[cut:])
    assert tail.read_lines() == ["progress █ done"]


def test_rotation_reads_the_rest_of_the_old_file_then_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    tail = FileTail(path)
    _append(path, "a\n")
    assert tail.read_lines() == ["a"]
    _append(path, "b\nc-without-newline")
    os.rename(path, tmp_path / "train.log.1")  # logrotate: rename, then create
    _append(path, "d\n")
    assert tail.read_lines() == ["b", "c-without-newline", "d"]
    assert tail.rotations == 1
    _append(path, "e\n")
    assert tail.read_lines() == ["e"]


def test_truncation_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    tail = FileTail(path)
    _append(path, "one\ntwo\n")
    assert tail.read_lines() == ["one", "two"]
    path.write_text("x\n")  # copytruncate, then a shorter write
    assert tail.read_lines() == ["x"]
    assert tail.truncations == 1


def test_tail_bytes_starts_near_the_end_at_a_line_start(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(1000)))
    lines = FileTail(path, tail_bytes=40).read_lines()
    assert lines[-1] == "line 999"
    assert all(line.startswith("line ") for line in lines)
    assert 3 <= len(lines) <= 5


def test_removed_then_recreated_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    tail = FileTail(path, tail_bytes=10)
    path.write_text("first\n")
    assert tail.read_lines() == ["first"]
    path.unlink()
    assert tail.read_lines() == []
    path.write_text("a fresh file, longer than tail_bytes\n")
    assert tail.read_lines() == ["a fresh file, longer than tail_bytes"]


def _metric(step: int, loss: float | None = 2.0) -> str:
    return json.dumps({"step": step, "total_steps": 10, "loss": loss}) + "\n"


def test_job_dir_source_finds_output_metrics_status_logs_and_recipe(tmp_path: Path) -> None:
    job = tmp_path / "job"
    (job / "output").mkdir(parents=True)
    (job / "logs").mkdir()
    (job / "recipe.yaml").write_text(
        "name: sft-13b\nmodel:\n  name: llama-2-13b\ntraining:\n  seq_len: 2048\n"
        "cluster:\n  nodes: [gpu1, gpu2, gpu3]\n"
    )
    _append(job / "output" / "metrics.jsonl", _metric(1) + _metric(2)[:10])
    (job / "output" / "status.json").write_text('{"phase": "training", "error": null}')
    _append(job / "logs" / "node00.log", "hello from node00\n")
    source = JobDirSource(job, clock=lambda: 100.0)
    items = source.poll()
    kinds = {type(i) for i in items}
    assert kinds == {JobInfo, MetricsSnapshot, StatusSnapshot, LogSnapshot}
    info = next(i for i in items if isinstance(i, JobInfo))
    assert info.name == "sft-13b" and info.model == "llama-2-13b" and info.gpus == 24
    assert info.params is not None and 12e9 < info.params < 14e9
    assert info.flops_per_token is not None and info.flops_per_token > 6 * info.params
    metrics = next(i for i in items if isinstance(i, MetricsSnapshot))
    assert [r.step for r in metrics.records] == [1]  # step 2 is still half-written
    log = next(i for i in items if isinstance(i, LogSnapshot))
    assert log.node == "node00" and log.lines == ("hello from node00",)

    _append(job / "output" / "metrics.jsonl", _metric(2)[10:] + "not json\n")
    items = source.poll()
    metrics = next(i for i in items if isinstance(i, MetricsSnapshot))
    assert [r.step for r in metrics.records] == [2] and metrics.bad_lines == 1
    assert not any(isinstance(i, (StatusSnapshot, JobInfo)) for i in items)  # unchanged


def test_half_written_status_is_retried_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(_metric(1, float("nan")))
    status = tmp_path / "status.json"
    status.write_text('{"phase": "fai')
    source = JobDirSource(tmp_path)
    items = source.poll()
    assert not any(isinstance(i, StatusSnapshot) for i in items)
    metrics = next(i for i in items if isinstance(i, MetricsSnapshot))
    loss = metrics.records[0].loss
    assert loss is not None and loss != loss  # NaN is data, kept as NaN
    status.write_text('{"phase": "failed", "error": "CUDA out of memory"}')
    os.utime(status, (1, 1))
    got = [i for i in source.poll() if isinstance(i, StatusSnapshot)]
    assert got[0].phase == "failed" and got[0].error == "CUDA out of memory"


def test_unknown_phase_is_kept_raw_and_hub_model_not_fetched(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "status.json").write_text('{"phase": "evaluating"}')
    (tmp_path / "recipe.yaml").write_text("model:\n  name: someorg/not-in-catalog\n")
    items = JobDirSource(tmp_path).poll()
    status = next(i for i in items if isinstance(i, StatusSnapshot))
    assert status.phase is None and status.raw_phase == "evaluating"
    info = next(i for i in items if isinstance(i, JobInfo))
    assert info.model == "someorg/not-in-catalog" and info.flops_per_token is None


def test_launcher_job_dir_state_recipe_and_per_node_logs(tmp_path: Path) -> None:
    """The launcher's layout (launcher/job/store.py): state.json, the recipe under its own name,
    job.log (all nodes merged) and logs/<node>.log, metrics.jsonl mirrored."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "sft.yaml").write_text("model:\n  name: llama-2-7b\n")
    _append(tmp_path / "metrics.jsonl", _metric(1))
    _append(tmp_path / "job.log", "gpu1/0 hello\ngpu2/8 hello\n")
    _append(tmp_path / "logs" / "gpu1.log", "gpu1/0 hello\n")
    _append(tmp_path / "logs" / "gpu2.log", "gpu2/8 hello\n")
    _append(tmp_path / "supervisor.log", "supervising\n")
    base = make_state("sft-0101-000000-aaaa", 1.0, name="sft", status="running")
    nodes = tuple(
        dataclasses.replace(n, name=name, nproc=8, status="running")
        for n, name in zip(base.nodes, ("gpu1", "gpu2"), strict=True)
    )
    state = dataclasses.replace(base, recipe_file="/home/me/recipes/sft.yaml", nodes=nodes)
    job = JobDir(tmp_path)
    (tmp_path / "state.json").write_text("{")  # half-written: read again on the next poll
    source = JobDirSource(tmp_path)
    first = source.poll()
    assert not any(isinstance(i, (StatusSnapshot, JobInfo)) for i in first)
    job.write_state(state)
    items = [*first, *source.poll()]
    info = next(i for i in items if isinstance(i, JobInfo))
    assert (info.name, info.model, info.gpus) == ("sft", "llama-2-7b", 16)
    status = next(i for i in items if isinstance(i, StatusSnapshot))
    assert status.phase == "training"
    logs = {i.node for i in items if isinstance(i, LogSnapshot)}
    assert logs == {"gpu1", "gpu2", "supervisor"}  # job.log would repeat every line
    cause = RootCause("gpu2", 1, 9, 1, "rank 9 exited with code 1", ())
    job.write_state(dataclasses.replace(state, status="failed", root_cause=cause))
    status = next(i for i in source.poll() if isinstance(i, StatusSnapshot))
    assert status.phase == "failed" and status.error == "gpu2: rank 9 exited with code 1"
