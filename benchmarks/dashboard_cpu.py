"""CPU of `tuneboard dashboard` and `tuneboard agent`, and sample-to-screen latency.

Each scenario runs the real command in a fresh process inside a pseudo-terminal
(120×40, TERM=xterm-256color, as over SSH), lets it settle, then measures the process's
own CPU time (/proc/PID/stat utime+stime) over --duration seconds at 1 Hz sampling:

  idle         the dashboard with nothing to show (Textual's own floor)
  24-cluster   3 nodes × 8 fake GPUs + a job directory written at 1 Hz (metrics line,
               three log lines), Cluster screen          target ≤ 10 % of one core
  24-job       the same, Job screen (loss plot + logs)   target ≤ 10 %
  512-compact  64 nodes × 8 fake GPUs, compact layout     target ≤ 25 %
  agent-8      `tuneboard agent --fake-gpus 8`, alone     target ≤ 1 %

The fake GPUs are sampled inside the dashboard process (through the real NvmlSampler on
the fake NVML), so that work counts against the dashboard: on a real cluster it runs in
each node's agent instead. Latency, two ways: "in-app" is from a snapshot's sample time
to the end of the frame that shows it (the app's own record); "end-to-end" is from this
script writing a metrics line to that step number appearing in the terminal output
(includes the tailer's 1 s poll).

    python benchmarks/dashboard_cpu.py                 # 60 s per scenario (~6 min)
    python benchmarks/dashboard_cpu.py --duration 10   # quick look
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
COLS, ROWS = 120, 40
TOTAL_STEPS = 1_000_000
ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[A-Za-z~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


class JobWriter:
    """A training job's files, written at 1 Hz: what the tailer reads."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        (directory / "logs").mkdir(parents=True)
        (directory / "status.json").write_text(json.dumps({"phase": "training", "error": None}))
        self.step = 0
        self.written_at: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        metrics = open(self.dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        logs = [open(self.dir / "logs" / f"node{n:02d}.log", "a") for n in range(3)]  # noqa: SIM115
        while not self._stop.wait(1.0):
            self.step += 1
            s = self.step
            line = {
                "step": s,
                "total_steps": TOTAL_STEPS,
                "epoch": s / TOTAL_STEPS,
                "loss": 1.0 + 1.0 / (1 + s / 50) + 0.03 * ((s * 7919) % 13) / 13,
                "grad_norm": 0.8,
                "learning_rate": 2e-5,
                "tokens_seen": s * 49152,
                "tokens_per_s": 33000.0,
                "elapsed_s": float(s),
                "eta_s": float(TOTAL_STEPS - s),
                "gpu_mem_peak_bytes": 61 << 30,
            }
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            self.written_at[s] = time.time()
            for n, log in enumerate(logs):
                log.write(f"[node{n:02d}/rank{n * 8}] step {s} loss {line['loss']:.4f}\n")
                log.flush()
        metrics.close()
        for log in logs:
            log.close()


@dataclass
class PtyProcess:
    """A command in a pseudo-terminal; its output is drained (and searched) in a thread."""

    argv: list[str]
    on_output: Callable[[bytes, float], None] | None = None
    pid: int = 0
    _master: int = -1
    _proc: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(COLS), "LINES": str(ROWS)}
        env.pop("COLORTERM", None)
        self._proc = subprocess.Popen(
            self.argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self._master = master
        self.pid = self._proc.pid
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(self._master, 65536)
            except OSError:
                return
            if not data:
                return
            if self.on_output is not None:
                self.on_output(data, time.time())

    def send(self, keys: str) -> None:
        os.write(self._master, keys.encode())

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self.send("q")
            try:
                self._proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(3)
        self._stop.set()
        os.close(self._master)


@dataclass
class Result:
    name: str
    cpu_percent: float
    target: float | None
    note: str = ""


def measure(
    name: str,
    argv: list[str],
    duration: float,
    *,
    settle: float,
    keys: str = "",
    target: float | None,
    job: JobWriter | None = None,
    stats: Path | None = None,
) -> tuple[Result, dict[str, list[float]]]:
    seen: dict[int, float] = {}
    tail = b""

    def on_output(data: bytes, when: float) -> None:
        nonlocal tail
        text = ANSI.sub(b"", tail + data)
        for m in re.finditer(rb"(\d+)/" + str(TOTAL_STEPS).encode(), text):
            seen.setdefault(int(m.group(1)), when)
        tail = data[-256:]

    proc = PtyProcess(argv, on_output if job else None)
    if job:
        job.start()
    proc.start()
    time.sleep(settle / 2)
    if keys:
        proc.send(keys)
    time.sleep(settle / 2)
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(duration)
    c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    proc.stop()
    if job:
        job.stop()
    latencies: dict[str, list[float]] = {}
    if job:
        latencies["end-to-end"] = [
            seen[s] - job.written_at[s]
            for s in seen
            if s in job.written_at and seen[s] > job.written_at[s]
        ]
    if stats is not None and stats.exists():
        latencies["in-app"] = json.loads(stats.read_text())["latencies_s"]
    return Result(name, 100 * (c1 - c0) / (t1 - t0), target), latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds measured per scenario"
    )
    parser.add_argument("--settle", type=float, default=6.0, help="seconds before measuring")
    parser.add_argument("--only", help="comma-separated scenario names")
    args = parser.parse_args()
    tb = [sys.executable, "-m", "tuneboard"]
    tmp = Path(tempfile.mkdtemp(prefix="tb-bench-"))
    results: list[Result] = []
    all_latencies: dict[str, list[float]] = {"in-app": [], "end-to-end": []}
    only = set(args.only.split(",")) if args.only else None

    def want(name: str) -> bool:
        return only is None or name in only

    try:
        empty = tmp / "empty.jsonl"
        empty.write_text(
            '{"tuneboard_record":1,"started_at":0}\n{"t":0,"source":"x","snapshot":{"kind":"source","source":"x","node":null,"time_s":0,"connected":true}}\n'
        )
        scenarios = [
            ("idle", [*tb, "dashboard", "--replay", str(empty)], "", None, False, None),
            ("24-cluster", [*tb, "dashboard", "--fake-gpus", "3x8"], "1", 10.0, True, None),
            ("24-job", [*tb, "dashboard", "--fake-gpus", "3x8"], "2", 10.0, True, None),
            (
                "512-compact",
                [*tb, "dashboard", "--fake-gpus", "64x8", "--compact"],
                "",
                25.0,
                False,
                None,
            ),
        ]
        for name, argv, keys, target, with_job, _ in scenarios:
            if not want(name):
                continue
            job = None
            stats = tmp / f"{name}.stats.json"
            argv = [*argv, "--stats", str(stats)]
            if with_job:
                job = JobWriter(tmp / name)
                argv.insert(len(tb) + 1, str(job.dir))
            result, lat = measure(
                name,
                argv,
                args.duration,
                settle=args.settle,
                keys=keys,
                target=target,
                job=job,
                stats=stats,
            )
            results.append(result)
            for kind, values in lat.items():
                if name != "idle":
                    all_latencies[kind].extend(values)
            print(f"  measured {name}: {result.cpu_percent:.2f}% of one core", file=sys.stderr)
        if want("agent-8"):
            proc = subprocess.Popen(
                [*tb, "agent", "--fake-gpus", "8", "--interval", "1"],
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            stdout = proc.stdout
            assert stdout is not None
            lines: list[bytes] = []
            reader = threading.Thread(
                target=lambda: lines.extend(iter(stdout.readline, b"")), daemon=True
            )
            reader.start()
            time.sleep(args.settle)
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.duration)
            c1, t1 = cpu_seconds(proc.pid), time.monotonic()
            proc.terminate()
            proc.wait(5)
            results.append(
                Result("agent-8", 100 * (c1 - c0) / (t1 - t0), 1.0, f"{len(lines)} lines")
            )
            print(f"  measured agent-8: {results[-1].cpu_percent:.2f}%", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\nCPU over {args.duration:.0f} s at 1 Hz, % of one core ({os.cpu_count()} cores, "
        f"{COLS}x{ROWS} pty, TERM=xterm-256color)"
    )
    print(f"{'scenario':<13} {'CPU %':>7} {'target':>7} {'ratio':>6}  verdict")
    ok = True
    for r in results:
        if r.target is None:
            print(f"{r.name:<13} {r.cpu_percent:>7.2f} {'-':>7} {'-':>6}  floor")
            continue
        ratio = r.cpu_percent / r.target
        ok &= ratio <= 1
        print(
            f"{r.name:<13} {r.cpu_percent:>7.2f} {r.target:>7.1f} {ratio:>6.2f}  "
            f"{'OK' if ratio <= 1 else 'OVER'} {r.note}"
        )
    print("\nsample -> screen latency (target ≤ 1.5 s)")
    latency_rows: dict[str, dict[str, float]] = {}
    for kind, values in all_latencies.items():
        if not values:
            continue
        p95 = statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)
        worst = max(values)
        ok &= worst <= 1.5 if kind == "end-to-end" else p95 <= 1.5
        latency_rows[kind] = {
            "n": len(values),
            "median_s": statistics.median(values),
            "p95_s": p95,
            "max_s": worst,
        }
        print(
            f"{kind:<11} n={len(values):<5} median {statistics.median(values):.3f} s  "
            f"p95 {p95:.3f} s  max {worst:.3f} s  ratio(p95/1.5) {p95 / 1.5:.2f}"
        )
    if only is None:  # a partial run does not replace the record
        out = ROOT / "benchmarks" / "results"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"dashboard_cpu-{time.strftime('%Y%m%d')}-{platform.machine()}.json"
        record = {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "duration_s": args.duration,
            "terminal": f"{COLS}x{ROWS} xterm-256color",
            "cpu_percent_of_one_core": [
                {"scenario": r.name, "cpu_percent": r.cpu_percent, "target": r.target}
                for r in results
            ],
            "latency": latency_rows,
            "all_within_target": ok,
        }
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
