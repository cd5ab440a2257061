"""Tail a job directory (the launcher's) or a recipe's output directory.

What is looked for under the directory D given, re-checked every `rescan_s` until found:

- metrics: `D/metrics.jsonl` (the launcher mirrors rank 0's there), else
  `D/*/metrics.jsonl` (e.g. `D/output/`), else `D/*/*/metrics.jsonl`. Every line is read
  from the start (the whole loss curve), one `StepMetrics` per line.
- status: the launcher's `D/state.json` (tuneboard/sources/job_status.py) when there is
  one, else the recipe's `status.json` next to metrics.jsonl.
- logs: every `*.log` in D, `D/logs/` and next to metrics.jsonl; each file is one log
  stream named by its stem (the launcher writes `logs/<node>.log`; its `job.log`, the
  same lines merged, is skipped when those exist). Only the last 64 KiB of an existing
  log is read at start.
- the recipe: `D/recipe.yaml`, the file state.json names, or `*.yaml` next to metrics,
  for the model and MFU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from pydantic import ValidationError

from launcher.job.store import JobState, state_from_json
from tuneboard.sources.codec import CodecError, status_from, step_metrics
from tuneboard.sources.filetail import FileTail
from tuneboard.sources.job_status import recipe_name, status_from_state
from tuneboard.sources.recipe_info import job_info_from_recipe
from tuneboard.sources.snapshots import (
    LogSnapshot,
    MetricsSnapshot,
    Snapshot,
    StatusSnapshot,
    StepMetrics,
)

LOG_TAIL_BYTES = 64 << 10
MAX_LOG_LINES_PER_POLL = 2000


def metrics_snapshot(lines: Iterable[str], now: float) -> MetricsSnapshot | None:
    """New metrics.jsonl lines -> one snapshot (None if none); bad lines are counted."""
    records: list[StepMetrics] = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            records.append(step_metrics(json.loads(line)))
        except (json.JSONDecodeError, CodecError):
            bad += 1
    if not records and not bad:
        return None
    return MetricsSnapshot(now, tuple(records), bad)


class JobDirSource:
    def __init__(
        self,
        directory: Path,
        *,
        interval_s: float = 1.0,
        rescan_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory if directory.is_dir() else directory.parent
        self._interval_s = interval_s
        self._rescan_s = rescan_s
        self._clock = clock
        self._metrics: FileTail | None = None
        self._status_path: Path | None = None
        self._status_key: tuple[float, int] | None = None
        self._last_status: StatusSnapshot | None = None
        self._logs: dict[Path, FileTail] = {}
        self._scanned_at: float | None = None
        self._job_info_sent = False
        self._launcher = False
        self._state: JobState | None = None

    @property
    def name(self) -> str:
        return f"job:{self.directory}"

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def _rescan(self, now: float) -> None:
        if self._scanned_at is not None and now - self._scanned_at < self._rescan_s:
            return
        self._scanned_at = now
        d = self.directory
        if self._metrics is None:
            for pattern in ("metrics.jsonl", "*/metrics.jsonl", "*/*/metrics.jsonl"):
                found = sorted(d.glob(pattern))
                if found:
                    self._metrics = FileTail(found[0])
                    break
        if (d / "state.json").is_file():
            self._status_path, self._launcher = d / "state.json", True
        elif self._metrics is not None:
            self._status_path = self._metrics.path.parent / "status.json"
        dirs = [d, d / "logs"]
        if self._metrics is not None and self._metrics.path.parent != d:
            dirs.append(self._metrics.path.parent)
        per_node = any((d / "logs").glob("*.log"))
        for folder in dirs:
            for path in sorted(folder.glob("*.log")):
                if path == d / "job.log" and per_node:
                    continue  # the launcher's merged copy of logs/<node>.log
                if path not in self._logs:
                    self._logs[path] = FileTail(path, tail_bytes=LOG_TAIL_BYTES)

    def poll(self) -> Sequence[Snapshot]:
        now = self._clock()
        self._rescan(now)
        out: list[Snapshot] = []
        status = self._read_status(now)
        if not self._job_info_sent:
            out.extend(self._job_info(now))
        if self._metrics is not None:
            metrics = self._read_metrics(now)
            if metrics is not None:
                out.append(metrics)
        if status is not None:
            out.append(status)
        for path, tail in self._logs.items():
            lines = tail.read_lines()
            if lines:
                out.append(LogSnapshot(path.stem, now, tuple(lines[-MAX_LOG_LINES_PER_POLL:])))
        return out

    def _job_info(self, now: float) -> list[Snapshot]:
        if self._launcher and self._state is None:
            return []  # wait for state.json: it names the recipe and the GPUs
        candidates = [self.directory / "recipe.yaml", self.directory / "recipe.yml"]
        if self._state is not None:
            candidates.insert(0, self.directory / recipe_name(self._state))
        if self._metrics is not None:
            candidates += sorted(self._metrics.path.parent.glob("*.yaml"))
        for path in candidates:
            if path.is_file():
                info = job_info_from_recipe(path, now)
                if info is not None:
                    self._job_info_sent = True
                    if self._state is None:
                        return [info]
                    gpus = self._state.world_size or info.gpus
                    planned = self._state.planned
                    return [
                        replace(
                            info,
                            gpus=gpus,
                            name=self._state.name,
                            planned_bytes=planned.tensor_bytes if planned else None,
                            planned_setup=planned.setup_label if planned else None,
                        )
                    ]
        return []

    def _read_metrics(self, now: float) -> MetricsSnapshot | None:
        assert self._metrics is not None
        return metrics_snapshot(self._metrics.read_lines(), now)

    def _read_status(self, now: float) -> StatusSnapshot | None:
        """The status when its file changed and parses; a half-written file is retried."""
        if self._status_path is None:
            return None
        try:
            st = self._status_path.stat()
            key = (st.st_mtime, st.st_size)
            if key == self._status_key:
                return None
            raw = self._status_path.read_bytes()
        except OSError:
            return None
        if self._launcher:
            try:
                state = state_from_json(raw)
            except ValidationError:
                return None  # half-written (or not the launcher's): read it again later
            self._status_key, self._state = key, state
            status = status_from_state(state, now)
        else:
            try:
                data = json.loads(raw.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return None
            if not isinstance(data, dict):
                return None
            self._status_key = key
            status = status_from(data, now)
        if self._last_status is not None and (
            status.phase,
            status.error,
            status.raw_phase,
        ) == (self._last_status.phase, self._last_status.error, self._last_status.raw_phase):
            return None
        self._last_status = status
        return status

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
        for tail in self._logs.values():
            tail.close()
