"""A node's CPU and RAM from /proc (Linux), for the agent and the local source."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tuneboard.sources.snapshots import HostSnapshot

#: Fewer jiffies than this between two samples (all CPUs together; 100 per CPU-second)
#: give a meaningless percentage: CPU % is None until that much time has passed.
MIN_JIFFIES = 20


def read_cpu_times(proc: Path = Path("/proc")) -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is no /proc."""
    try:
        first = (proc / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user/nice
    return total - idle, total


def read_memory(proc: Path = Path("/proc")) -> tuple[int, int] | None:
    """(used, total) bytes from /proc/meminfo (used = total - MemAvailable)."""
    try:
        text = (proc / "meminfo").read_text()
    except OSError:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0]) * 1024  # kB
    if "MemTotal" not in fields or "MemAvailable" not in fields:
        return None
    return fields["MemTotal"] - fields["MemAvailable"], fields["MemTotal"]


class HostSampler:
    """CPU % since the previous sample (the first sample has none), RAM, load average."""

    def __init__(
        self, node: str, *, proc: Path = Path("/proc"), clock: Callable[[], float] = time.time
    ) -> None:
        self.node = node
        self._proc = proc
        self._clock = clock
        self._last = read_cpu_times(proc)

    def sample(self) -> HostSnapshot:
        now = read_cpu_times(self._proc)
        cpu_percent = None
        if now is not None and self._last is not None:
            if now[1] - self._last[1] >= MIN_JIFFIES:
                cpu_percent = 100.0 * (now[0] - self._last[0]) / (now[1] - self._last[1])
                self._last = now
        else:
            self._last = now
        memory = read_memory(self._proc)
        try:
            load_1m: float | None = os.getloadavg()[0]
        except OSError:
            load_1m = None
        return HostSnapshot(
            node=self.node,
            time_s=self._clock(),
            cpu_percent=cpu_percent,
            cpu_count=os.cpu_count(),
            memory_used_bytes=memory[0] if memory else None,
            memory_total_bytes=memory[1] if memory else None,
            load_1m=load_1m,
        )
