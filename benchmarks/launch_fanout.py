"""Launch fan-out: connect, preflight, start and stop on 1, 4 and 16 loopback sshd nodes.

    python benchmarks/launch_fanout.py                 # 1, 4, 16 nodes, 3 runs each
    python benchmarks/launch_fanout.py --nodes 1,3,8 --runs 5

Each "node" is a real sshd on 127.0.0.N (tests/integration/sshd.py: needs root and
openssh-server). Per node count, timed with the launcher's own code: connect (one
paramiko connection per node, in parallel), preflight (the node probe on every node plus
the master's listener and every node's TCP connection to it), start (one detached job per
node: `sleep`, standing in for torchrun, whose own start is the node's business) and stop
(TERM, then KILL by marker). Prints medians, the ratio to one node, and the CPU seconds
spent during preflight by this whole machine (cpu-s) and by the launcher process alone
(launcher): here every node shares the same cores, so the node-side work (sshd, the
probe's python) adds up, where on a cluster it runs on each node's own CPUs.
Target (issue 4): 16 nodes within 2x of one node.
Writes the rows to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launcher import proc  # noqa: E402
from launcher.launch import LaunchRequest, check, connect, prepare  # noqa: E402
from launcher.transport import ConnectOptions  # noqa: E402
from tests.integration.sshd import SshdCluster, skip_reason, start_cluster  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TARGET_RATIO = 2.0


def busy_cpu_s() -> float:
    """CPU seconds spent by the whole machine so far (user+nice+system+irq+softirq)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = sum(int(fields[i]) for i in (0, 1, 2, 5, 6))
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process (the launcher side: paramiko, the fan-out threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def recipe_for(cluster: SshdCluster, n: int, folder: Path) -> Path:
    path = folder / f"fanout-{n}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "llama-2-7b"},
                "cluster": {
                    "nodes": [
                        {
                            "address": node.address,
                            "port": node.port,
                            "user": cluster.user,
                            "key": str(cluster.client_key),
                            "name": f"node{node.index}",
                        }
                        for node in cluster.nodes[:n]
                    ],
                    "gpus_per_node": 1,
                    "workdir": str(folder / "nodes" / "{node_rank}"),
                    "python": sys.executable,
                },
            }
        )
    )
    return path


def one_run(cluster: SshdCluster, n: int, folder: Path, run: int) -> dict[str, float]:
    request = LaunchRequest(
        recipe_path=recipe_for(cluster, n, folder),
        cpu=True,
        cwd=folder,
        connect=ConnectOptions(
            known_hosts=cluster.known_hosts,
            system_known_hosts=None,
            ssh_config=None,
            identity_files=(cluster.client_key,),
            use_agent=False,
            look_for_keys=False,
        ),
    )
    prepared = prepare(request)
    t0 = time.perf_counter()
    with connect(prepared) as pool:
        t1 = time.perf_counter()
        cpu0, own0 = busy_cpu_s(), own_cpu_s()
        checked = check(prepared, pool)
        t2 = time.perf_counter()
        cpu_s, own_s = busy_cpu_s() - cpu0, own_cpu_s() - own0
        failures = checked.report.failures
        if failures:
            raise SystemExit(f"preflight failed on {n} nodes: {failures[:3]}")
        # One marker per node, as the launcher does (all "nodes" are this machine).
        marker = f"fanout-{n}-{run}-{os.getpid()}"
        started = pool.map(
            lambda t: proc.start_detached(
                t,
                ["sleep", "60"],
                marker=f"{marker}.{t.node.name}",
                pid_path=str(folder / "jobs" / marker / f"{t.node.name}.pid"),
                log_path=str(folder / "jobs" / marker / f"{t.node.name}.log"),
            )
        )
        t3 = time.perf_counter()
        stopped = pool.map(lambda t: proc.stop_marker(t, f"{marker}.{t.node.name}", grace_s=5))
        t4 = time.perf_counter()
    errors = [r.error for r in started if r.error] + [r.error for r in stopped if r.error]
    if errors:
        raise SystemExit(f"start/stop failed: {errors[0]}")
    return {
        "connect_s": t1 - t0,
        "preflight_s": t2 - t1,
        "start_s": t3 - t2,
        "stop_s": t4 - t3,
        "total_s": t4 - t0,
        "preflight_cpu_s": cpu_s,
        "preflight_launcher_cpu_s": own_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,4,16", help="comma-separated node counts")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    counts = [int(x) for x in args.nodes.split(",")]
    reason = skip_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tb-fanout-") as tmp:
        folder = Path(tmp)
        cluster = start_cluster(folder / "sshd", max(counts))
        try:
            for n in counts:
                runs = [one_run(cluster, n, folder, r) for r in range(args.runs)]
                row: dict[str, Any] = {"nodes": n, "runs": args.runs}
                for key in runs[0]:
                    row[key] = statistics.median(r[key] for r in runs)
                rows.append(row)
        finally:
            cluster.stop()
    base = rows[0]["total_s"]
    print(
        f"{'nodes':>5} {'connect':>8} {'preflight':>10} {'start':>7} {'stop':>7} "
        f"{'total':>7} {'vs 1':>6} {'cpu-s':>6} {'launcher':>8}"
    )
    for row in rows:
        row["ratio"] = row["total_s"] / base
        print(
            f"{row['nodes']:>5} {row['connect_s']:>8.2f} {row['preflight_s']:>10.2f} "
            f"{row['start_s']:>7.2f} {row['stop_s']:>7.2f} {row['total_s']:>7.2f} "
            f"{row['ratio']:>5.1f}x {row['preflight_cpu_s']:>6.2f} "
            f"{row['preflight_launcher_cpu_s']:>8.2f}"
        )
    worst = rows[-1]
    verdict = "within" if worst["ratio"] <= TARGET_RATIO else "NOT within"
    print(
        f"{worst['nodes']} nodes: {worst['ratio']:.1f}x one node ({verdict} the {TARGET_RATIO:g}x "
        f"target) on {os.cpu_count()} shared cores"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d")
    out = RESULTS / f"launch_fanout-{stamp}-{platform.machine()}.json"
    out.write_text(
        json.dumps(
            {"cpu_count": os.cpu_count(), "python": sys.version.split()[0], "rows": rows}, indent=1
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
