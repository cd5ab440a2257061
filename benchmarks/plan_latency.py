"""`tuneboard plan --model 30b --gpus 24xA800`, cold, side by side with `python -c pass`.

Target: under 0.5 s on the project's 2-core machines. Each command runs in a
fresh process (no warm imports), alternating, N times; prints medians and the ratio.

    python benchmarks/plan_latency.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.5


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    baseline_cmd = [sys.executable, "-c", "pass"]
    plan_cmd = [sys.executable, "-m", "tuneboard", "plan", "--model", "30b", "--gpus", "24xA800"]
    json_cmd = [*plan_cmd, "--json"]
    samples: dict[str, list[float]] = {"python -c pass": [], "plan": [], "plan --json": []}
    for _ in range(args.runs):
        samples["python -c pass"].append(_time(baseline_cmd))
        samples["plan"].append(_time(plan_cmd))
        samples["plan --json"].append(_time(json_cmd))
    base = statistics.median(samples["python -c pass"])
    print(f"{'command':<16} {'median s':>9} {'min s':>7} {'x python':>9}")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"{name:<16} {med:>9.3f} {min(values):>7.3f} {med / base:>9.1f}")
    plan_med = statistics.median(samples["plan"])
    verdict = "OK" if plan_med < TARGET_S else "OVER TARGET"
    print(f"target: plan < {TARGET_S} s -> {plan_med:.3f} s {verdict}")
    return 0 if plan_med < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
