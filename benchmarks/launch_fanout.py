"""Launch fan-out: connect, preflight, start and stop on 1, 4 and 16 loopback sshd nodes.

    python benchmarks/launch_fanout.py                 # 1, 4, 16 nodes, 3 runs each
    python benchmarks/launch_fanout.py --nodes 1,3,8 --runs 5

Each "node" is a real sshd on 127.0.0.N (tests/support/sshd.py: needs root and
openssh-server). Per node count, timed with the launcher's own code: connect (one
paramiko connection per node, in parallel), preflight (the node probe on every node, the
master's probe also listening for every node's TCP connection), start (one detached job
per node: `sleep`, standing in for torchrun, whose own start is the node's business) and
stop (TERM, then KILL by marker); and, outside the total, "channel": one command that
does nothing (`true`) on every node, the floor under every phase (an SSH channel and the
login shell). Medians of the runs. Three series, side by side:

1. shared: the raw wall-clock ratio to one node. Every node is a process tree on this
   machine, so the node-side work of N nodes (sshd, the login shell and its rc files, the
   probe's python, /proc scans) competes for the same few cores; on a cluster each node
   does it on its own CPUs. The login account's rc files run for every SSH command, as
   for `ssh node cmd`; here (root, one home for all the nodes) they can also hold a lock
   that the nodes wait on each other for (pyenv's `rehash` in ~/.bashrc does).
2. shared, no login rc: the same with every node's sshd setting SHLVL=1, so that bash
   skips ~/.bashrc: what the raw ratio owes to the login account, not to the launcher.
3. isolated: no login rc, and every node's sshd in a cgroup with a CPU quota of
   (cores - 1) / (the largest node count) cores, the same at every node count; this
   process keeps the remaining core. Each node's own work then takes as long at 16 nodes
   as at 1, as on a cluster of identical machines, and the ratio is the fan-out's own
   cost: the launcher's threads and CPU, the master's probe waiting for N connections.
   (Each node is a slow computer here, so absolute times are long; "+s" is what N nodes
   add to one.)

Also printed: the CPU seconds one node spends per phase at 1 node (everything its sshd
ran, from the cgroup's accounting), with and without the login rc, and the SSH channels
(each one a login shell) and SFTP reads (no shell) per phase. On a cluster that work
runs on the node's own CPU, in parallel with every other node's.

Target (issue 4): 16 nodes within 2x of one node; the verdict is printed per series.
Per-node CPU and series 3 need cgroup CPU accounting (v1 cpu+cpuacct, or v2 with the cpu
controller). Other load on this machine shows in the wall times (the load average is
recorded), not in the cgroup CPU seconds.
Writes benchmarks/results/launch_fanout-DATE-ARCH.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launcher.job import node_process as proc  # noqa: E402
from launcher.job.launch import LaunchRequest, check, connect, prepare  # noqa: E402
from launcher.transport.base import CommandResult, Transport  # noqa: E402
from launcher.transport.fanout import NodePool  # noqa: E402
from tests.support.sshd import SshdCluster, skip_reason, start_cluster  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TARGET_RATIO = 2.0
PHASES = ("connect", "preflight", "start", "stop")
#: Measured too, outside the total.
FLOOR = "channel"
#: CFS refuses quotas under 1 ms per period.
MIN_QUOTA_US = 1000


# -- CPU accounting ---------------------------------------------------------------------------


class NodeCgroups:
    """One cgroup per node's sshd, so everything it starts (sessions, the login shell, the
    probe, the job) is counted there; optionally a CPU quota per node."""

    def __init__(self, kind: str, dirs: list[dict[str, Path]], roots: dict[str, Path]) -> None:
        self.kind = kind
        self._dirs = dirs  # per node: {"acct": dir, "cpu": dir}
        self._roots = roots  # {"acct": our folder, "cpu": our folder} (may be the same)

    @classmethod
    def create(cls, pids: Sequence[int]) -> NodeCgroups | str:
        """Cgroups holding the given sshd pids, or why there cannot be any."""
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
        v1 = {
            opt: Path(m[1])
            for m in mounts
            if m[2] == "cgroup"
            for opt in m[3].split(",")
            if opt in ("cpu", "cpuacct")
        }
        name = f"tb-fanout-{os.getpid()}"
        try:
            if "cpuacct" in v1 and "cpu" in v1:
                roots = {"acct": v1["cpuacct"] / name, "cpu": v1["cpu"] / name}
                kind = "v1"
            else:
                v2 = next((Path(m[1]) for m in mounts if m[2] == "cgroup2"), None)
                if v2 is None:
                    return "no cgroup cpu accounting (neither v1 cpuacct+cpu nor v2 mounted)"
                roots = {"acct": v2 / name, "cpu": v2 / name}
                kind = "v2"
                roots["acct"].mkdir()
                (roots["acct"] / "cgroup.subtree_control").write_text("+cpu")
            dirs = []
            for i, pid in enumerate(pids):
                node = {k: root / f"node{i}" for k, root in roots.items()}
                for folder in [*roots.values(), *node.values()]:  # parents first
                    folder.mkdir(exist_ok=True)
                for folder in set(node.values()):
                    (folder / "cgroup.procs").write_text(str(pid))
                dirs.append(node)
        except OSError as err:
            return f"cannot use cgroups ({err.strerror or err}: {err.filename})"
        return cls(kind, dirs, roots)

    def usage_s(self, node: int) -> float:
        folder = self._dirs[node]["acct"]
        if self.kind == "v1":
            return int((folder / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (folder / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def usages(self) -> list[float]:
        return [self.usage_s(i) for i in range(len(self._dirs))]

    def set_quota(self, cores: float | None) -> None:
        """Cap every node at `cores` CPUs (None: no cap)."""
        period = 100_000 if cores is None else max(10_000, math.ceil(MIN_QUOTA_US / cores))
        for node in self._dirs:
            folder = node["cpu"]
            if self.kind == "v1":
                quota = -1 if cores is None else round(period * cores)
                (folder / "cpu.cfs_quota_us").write_text("-1")  # then the period may change
                (folder / "cpu.cfs_period_us").write_text(str(period))
                (folder / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                quota_text = "max" if cores is None else str(round(period * cores))
                (folder / "cpu.max").write_text(f"{quota_text} {period}")

    def remove(self) -> None:
        """Move what is left to the parent cgroup and delete ours (the nodes have stopped)."""
        for node in self._dirs:
            for folder in set(node.values()):
                parent_procs = folder.parent.parent / "cgroup.procs"
                for pid in (folder / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        parent_procs.write_text(pid)
                _rmdir(folder)
        for root in set(self._roots.values()):
            _rmdir(root)


def _rmdir(folder: Path) -> None:
    for _ in range(50):  # a process that just exited may hold it for a moment
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent (user+nice+system+irq+softirq)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6)) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process: the launcher side (paramiko, the fan-out threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- one run ----------------------------------------------------------------------------------


class Counting:
    """A node's transport that counts what it is asked: commands (one SSH channel, the
    login shell, each) and file reads (the connection's SFTP session: no shell)."""

    def __init__(self, inner: Transport, counts: Counter[str]) -> None:
        self._inner = inner
        self._counts = counts

    def run(self, argv: Sequence[str], **options: Any) -> CommandResult:
        self._counts["channels"] += 1
        return self._inner.run(argv, **options)

    def read_from(self, path: str, offset: int, max_bytes: int = 1 << 20) -> bytes:
        self._counts["sftp_reads"] += 1
        return self._inner.read_from(path, offset, max_bytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


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


class Meter:
    """Wall, launcher CPU and node-side CPU (per node) of each phase of one run."""

    def __init__(self, cgroups: NodeCgroups | None, n: int) -> None:
        self._cgroups = cgroups
        self._n = n
        self.phases: dict[str, dict[str, Any]] = {}

    def _now(self) -> tuple[float, float, list[float], float]:
        nodes = self._cgroups.usages()[: self._n] if self._cgroups is not None else []
        return time.perf_counter(), own_cpu_s(), nodes, machine_busy_s()

    def measure(self, phase: str, fn: Callable[[], Any], counts: Counter[str]) -> Any:
        counts.clear()
        wall0, own0, nodes0, busy0 = self._now()
        value = fn()
        wall1, own1, nodes1, busy1 = self._now()
        self.phases[phase] = {
            "wall_s": wall1 - wall0,
            "launcher_cpu_s": own1 - own0,
            "machine_cpu_s": busy1 - busy0,
            "node_cpu_s": [b - a for a, b in zip(nodes0, nodes1, strict=True)] or None,
            "channels": counts["channels"],
            "sftp_reads": counts["sftp_reads"],
        }
        return value


def one_run(
    cluster: SshdCluster, cgroups: NodeCgroups | None, n: int, folder: Path, run: str
) -> dict[str, dict[str, Any]]:
    request = LaunchRequest(
        recipe_path=recipe_for(cluster, n, folder),
        cpu=True,
        cwd=folder,
        connect=cluster.connect_options(),
    )
    prepared = prepare(request)
    meter = Meter(cgroups, n)
    counts: Counter[str] = Counter()
    pool: NodePool = meter.measure("connect", lambda: connect(prepared), counts)
    with pool:
        if pool.failures:
            raise SystemExit(f"cannot connect: {pool.failures[0].error}")
        for name, transport in list(pool.transports.items()):
            pool.transports[name] = Counting(transport, counts)
        floor = meter.measure("channel", lambda: pool.map(lambda t: t.run(["true"])), counts)
        if any(r.value is None or not r.value.ok for r in floor):
            raise SystemExit(f"`true` failed on a node: {floor}")
        checked = meter.measure("preflight", lambda: check(prepared, pool), counts)
        if checked.report.failures:
            raise SystemExit(f"preflight failed on {n} nodes: {checked.report.failures[:3]}")
        marker = f"fanout-{n}-{run}-{os.getpid()}"  # one per node, as the launcher does
        jobs = folder / "jobs" / marker
        started = meter.measure(
            "start",
            lambda: pool.map(
                lambda t: proc.start_detached(
                    t,
                    ["sleep", "60"],
                    marker=f"{marker}.{t.node.name}",
                    pid_path=str(jobs / f"{t.node.name}.pid"),
                    log_path=str(jobs / f"{t.node.name}.log"),
                )
            ),
            counts,
        )
        stopped = meter.measure(
            "stop",
            lambda: pool.map(lambda t: proc.stop_marker(t, f"{marker}.{t.node.name}", grace_s=5)),
            counts,
        )
    errors = [r.error for r in (*started, *stopped) if r.error]
    if errors:
        raise SystemExit(f"start/stop failed: {errors[0]}")
    return meter.phases


def median_row(n: int, runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per phase: medians over the runs (node CPU: of the sum, the mean per node, node 0)."""
    row: dict[str, Any] = {"nodes": n, "runs": len(runs)}
    for phase in (*PHASES, FLOOR):
        got = [r[phase] for r in runs]
        out: dict[str, Any] = {
            key: statistics.median(g[key] for g in got)
            for key in ("wall_s", "launcher_cpu_s", "machine_cpu_s", "channels", "sftp_reads")
        }
        if got[0]["node_cpu_s"] is not None:
            out["node_cpu_s"] = statistics.median(sum(g["node_cpu_s"]) for g in got)
            out["node_cpu_per_node_s"] = out["node_cpu_s"] / n
            out["master_cpu_s"] = statistics.median(g["node_cpu_s"][0] for g in got)
            if n > 1:
                out["other_node_cpu_s"] = statistics.median(
                    statistics.mean(g["node_cpu_s"][1:]) for g in got
                )
        out["channels_per_node"] = out["channels"] / n
        row[phase] = out
    row["total_s"] = statistics.median(sum(r[p]["wall_s"] for p in PHASES) for r in runs)
    return row


def run_series(
    cluster: SshdCluster,
    cgroups: NodeCgroups | None,
    counts: list[int],
    runs: int,
    folder: Path,
    label: str,
) -> list[dict[str, Any]]:
    rows = []
    for n in counts:
        results = [one_run(cluster, cgroups, n, folder, f"{label}{r}") for r in range(runs)]
        rows.append(median_row(n, results))
    base = rows[0]["total_s"]
    for row in rows:
        row["ratio"] = row["total_s"] / base
        row["added_s"] = row["total_s"] - base
    return rows


def skip_login_rc(cluster: SshdCluster) -> None:
    """Every node's sshd sets SHLVL=1 in its sessions: bash then skips ~/.bashrc (it reads
    it for sshd only below shell level 2). SIGHUP makes sshd re-exec itself with its new
    config (same pid, so the same cgroup); wait until it listens again."""
    for node in cluster.nodes:
        config = node.host_key.parent / "sshd_config"
        text = config.read_text()
        if "SetEnv SHLVL=" not in text:
            config.write_text(text + "SetEnv SHLVL=1\n")
        os.kill(node.pid, signal.SIGHUP)
    time.sleep(0.2)  # the old listening socket is closed by then
    for node in cluster.nodes:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((node.address, node.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"sshd on {node.host} did not come back") from None
                time.sleep(0.02)


# -- report -----------------------------------------------------------------------------------


def print_walls(title: str, rows: list[dict[str, Any]], cpu: bool) -> None:
    print(title)
    head = f"{'nodes':>5} " + " ".join(f"{p:>9}" for p in PHASES)
    head += f" {'total':>7} {'vs 1':>6} {'+s':>6} | {'channel':>7}"
    if cpu:
        head += f" {'node cpu/node':>13} {'launcher cpu':>12}"
    print(head)
    for row in rows:
        line = f"{row['nodes']:>5} " + " ".join(f"{row[p]['wall_s']:>9.2f}" for p in PHASES)
        line += f" {row['total_s']:>7.2f} {row['ratio']:>5.2f}x {row['added_s']:>6.2f}"
        line += f" | {row[FLOOR]['wall_s']:>7.2f}"
        if cpu:
            per_node = sum(row[p].get("node_cpu_per_node_s", math.nan) for p in PHASES)
            launcher = sum(row[p]["launcher_cpu_s"] for p in PHASES)
            line += f" {per_node:>11.3f} s {launcher:>10.3f} s"
        print(line)


def per_node(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Node-side CPU of one node per phase (from the 1-node rows), and what it spends
    beyond its channels (a channel: the median CPU of one `true`)."""
    table: dict[str, Any] = {}
    for label, row in rows.items():
        floor = row[FLOOR]["node_cpu_s"] / max(1, row[FLOOR]["channels"])
        table[label] = {"one_channel_cpu_s": floor}
        for phase in PHASES:
            got = row[phase]
            table[label][phase] = {
                "node_cpu_s": got["node_cpu_s"],
                "channels": got["channels"],
                "sftp_reads": got["sftp_reads"],
                "beyond_channels_cpu_s": got["node_cpu_s"] - got["channels"] * floor,
            }
    return table


def print_per_node(table: dict[str, Any]) -> None:
    print("per node: CPU seconds one node spends per phase, at 1 node (on a cluster: its own CPU)")
    labels = list(table)
    head = f"{'phase':>10} {'channels':>8} {'sftp':>5}"
    for label in labels:
        head += f" {label:>13} {'beyond chan.':>12}"
    print(head)
    first = table[labels[0]]
    for phase in PHASES:
        line = f"{phase:>10} {first[phase]['channels']:>8.0f} {first[phase]['sftp_reads']:>5.0f}"
        for label in labels:
            got = table[label][phase]
            line += f" {got['node_cpu_s']:>11.3f} s {got['beyond_channels_cpu_s']:>10.3f} s"
        print(line)
    line = f"{'all':>10} {'':>8} {'':>5}"
    for label in labels:
        line += f" {sum(table[label][p]['node_cpu_s'] for p in PHASES):>11.3f} s {'':>12}"
    print(line)
    print(
        "one channel (`true`): "
        + ", ".join(f"{table[k]['one_channel_cpu_s']:.3f} s {k}" for k in labels)
    )


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    worst = rows[-1]
    return {
        "nodes": worst["nodes"],
        "ratio": worst["ratio"],
        "added_s": worst["added_s"],
        "within_target": worst["ratio"] <= TARGET_RATIO,
    }


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", default="1,4,16", help="comma-separated node counts")
    parser.add_argument("--runs", type=int, default=3, help="runs per node count and series")
    args = parser.parse_args()
    counts = sorted({int(x) for x in args.nodes.split(",")})
    reason = skip_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1
    report: dict[str, Any] = {
        "cpu_count": cores,
        "python": sys.version.split()[0],
        "target_ratio": TARGET_RATIO,
        "loadavg_before": loadavg(),
    }
    series: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tb-fanout-") as tmp:
        folder = Path(tmp)
        cluster = start_cluster(folder / "sshd", max(counts))
        made = NodeCgroups.create([node.pid for node in cluster.nodes])
        cgroups = made if isinstance(made, NodeCgroups) else None
        report["cgroups"] = made if isinstance(made, str) else made.kind
        try:
            rows = run_series(cluster, cgroups, counts, args.runs, folder, "a")
            series["shared"] = {"login_rc": True, "cores_per_node": None, "rows": rows}
            skip_login_rc(cluster)
            rows = run_series(cluster, cgroups, counts, args.runs, folder, "b")
            series["shared_no_rc"] = {"login_rc": False, "cores_per_node": None, "rows": rows}
            if cgroups is not None and cores > 1:
                share = (cores - 1) / max(counts)
                cgroups.set_quota(share)
                try:
                    rows = run_series(cluster, cgroups, counts, args.runs, folder, "c")
                finally:
                    cgroups.set_quota(None)
                series["isolated"] = {"login_rc": False, "cores_per_node": share, "rows": rows}
        finally:
            cluster.stop()
            if cgroups is not None:
                cgroups.remove()
    report["loadavg_after"] = loadavg()
    report["series"] = series

    print(
        f"{cores} cores; load average before {report['loadavg_before']}, after "
        f"{report['loadavg_after']}; cgroups: {report['cgroups']}"
    )
    share = series.get("isolated", {}).get("cores_per_node") or 0.0
    titles = {
        "shared": "1. shared: every node's work on this machine's cores (raw)",
        "shared_no_rc": "2. shared, no login rc (bash skips ~/.bashrc)",
        "isolated": f"3. isolated: no login rc, each node capped at {share:.4g} cores at every "
        "node count",
    }
    for key, got in series.items():
        print()
        print_walls(titles[key], got["rows"], cpu=cgroups is not None)
    if cgroups is not None:
        table = per_node(
            {
                "login rc": series["shared"]["rows"][0],
                "no login rc": series["shared_no_rc"]["rows"][0],
            }
        )
        report["per_node_at_1"] = table
        print()
        print_per_node(table)
    print()
    verdicts = {key: verdict(got["rows"]) for key, got in series.items()}
    report["verdicts"] = verdicts
    for key, v in verdicts.items():
        within = "within" if v["within_target"] else "NOT within"
        print(
            f"{key:>12}: {v['nodes']} nodes {v['ratio']:.2f}x one node (+{v['added_s']:.2f} s): "
            f"{within} the {TARGET_RATIO:g}x target"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"launch_fanout-{time.strftime('%Y%m%d')}-{platform.machine()}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
