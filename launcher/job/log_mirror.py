"""The job directory's logs and metrics mirror, written as the supervisor receives them.

- every line of a node's torchrun log becomes `node/rank text` (rank: the global rank from
  torchrun's prefix, `torchrun` for its own lines) in job.log and logs/<node>.log;
- the last lines of each rank and of each node's torchrun stay in memory for the root cause;
- rank 0's metrics.jsonl lines are appended to the job's metrics.jsonl as they are, and
  each training line becomes a Progress (step/total, loss, tokens/s, ETA).
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterable
from typing import IO

from launcher.job.store import JobDir, Progress, rank_memory
from launcher.job.torchrun import split_rank

#: Lines kept per rank (and 10x that per node's torchrun) for the root cause.
KEEP_LINES = 40


def rank_label(rank: int | None) -> str:
    return "torchrun" if rank is None else str(rank)


class JobLog:
    def __init__(self, job: JobDir, nodes: Iterable[str]) -> None:
        self._job = job
        self._nodes = list(nodes)
        self._files: dict[str, IO[str]] = {}
        self._agent: dict[str, collections.deque[str]] = {}
        self._ranks: dict[int, collections.deque[str]] = {}

    def open(self) -> None:
        self._files["job"] = self._job.combined_log.open("a", encoding="utf-8")
        self._files["metrics"] = self._job.metrics.open("a", encoding="utf-8")
        for node in self._nodes:
            self._files[node] = self._job.node_log(node).open("a", encoding="utf-8")

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def line(self, node: str, line: str) -> tuple[int | None, str]:
        """Write one raw line of a node's log; returns (rank or None, text)."""
        rank, text = split_rank(line)
        if rank is None:
            self._agent.setdefault(node, collections.deque(maxlen=KEEP_LINES * 10)).append(text)
        else:
            self._ranks.setdefault(rank, collections.deque(maxlen=KEEP_LINES)).append(text)
        out = f"{node}/{rank_label(rank)} {text}\n"
        for name in ("job", node):
            self._files[name].write(out)
            self._files[name].flush()
        return rank, text

    def agent_lines(self, node: str) -> tuple[str, ...]:
        return tuple(self._agent.get(node, ()))

    def rank_lines(self, rank: int) -> tuple[str, ...]:
        return tuple(self._ranks.get(rank, ()))

    def metrics(self, lines: Iterable[str]) -> Progress | None:
        """Mirror rank 0's metrics lines; the progress of the last training line, if any."""
        progress = None
        out = self._files["metrics"]
        for line in lines:
            out.write(line + "\n")
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("event", "train") == "train":
                progress = Progress(
                    step=_int(record.get("step")),
                    total_steps=_int(record.get("total_steps")),
                    loss=_float(record.get("loss")),
                    tokens_per_s=_float(record.get("tokens_per_s")),
                    eta_s=_float(record.get("eta_s")),
                    updated_at=time.time(),
                    memory=rank_memory(record.get("memory")),
                )
        out.flush()
        return progress


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
