"""Time and memory of `--trace` on a full Llama-2-7B-shaped model (issue 6 target, for the
trace itself:
<= 10 s and <= 2 GB RSS on the project's 2-core machines), beside the cost of just
importing torch + transformers + peft, measured in the same run.

    python benchmarks/trace_speed.py [--seq-len 2048]

Each measurement runs in a fresh process; RSS is that process's peak (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 10.0
TARGET_RSS_BYTES = 2 * 10**9

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
import torch, transformers, peft  # noqa: F401
t_import = time.perf_counter() - t0
method, seq = sys.argv[1], int(sys.argv[2])
result = None
if method != "imports":
    from planner.model_catalog import find_catalog_entry
    from planner.fake_trace import trace_training_step
    cfg = find_catalog_entry("llama-2-7b").config_dict()
    t1 = time.perf_counter()
    r = trace_training_step(cfg, method=method, seq_len=seq, micro_batch=1, warm_start=True)
    result = {"trace_s": time.perf_counter() - t1, "peak_gib": r.peak_bytes / 2**30}
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"import_s": t_import, "total_s": time.perf_counter() - t0, "rss_bytes": rss,
                  "result": result}))
"""


def _run(method: str, seq: int) -> tuple[float, int, float | None, float | None]:
    """(total seconds, peak RSS bytes, trace seconds, traced peak GiB) of one fresh process."""
    out = (
        subprocess.run(
            [sys.executable, "-c", CHILD, method, str(seq)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    data = json.loads(out)
    result = data["result"] or {}
    return (
        float(data["total_s"]),
        int(data["rss_bytes"]),
        result.get("trace_s"),
        result.get("peak_gib"),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=2048)
    args = parser.parse_args()
    base_s, base_rss, _, _ = _run("imports", args.seq_len)
    print(f"{'run':<10} {'total s':>8} {'trace s':>8} {'RSS MB':>8} {'x imports':>9}  peak")
    print(f"{'imports':<10} {base_s:>8.2f} {'-':>8} {base_rss / 1e6:>8.0f}")
    ok = True
    for method in ("full", "lora"):
        total, rss, trace_s, peak = _run(method, args.seq_len)
        print(
            f"{method:<10} {total:>8.2f} {trace_s or 0:>8.2f} {rss / 1e6:>8.0f} "
            f"{total / base_s:>9.1f}  {peak or 0:.2f} GiB"
        )
        ok = ok and (trace_s or 0) <= TARGET_S and rss <= TARGET_RSS_BYTES
    verdict = "OK" if ok else "OVER"
    print(f"target: <= {TARGET_S:.0f} s and <= {TARGET_RSS_BYTES / 1e9:.0f} GB -> {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
