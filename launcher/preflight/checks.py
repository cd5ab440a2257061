"""Preflight: every check on every node, in parallel, before anything starts.

Two rounds, each on all nodes at once (launcher/transport/fanout.py):
1. connect (reachable and authenticated: the NodePool itself);
2. the node probe (launcher/preflight/node_probe.py, run by the recipe's python): python found,
   packages installed and importable with their versions, GPUs, RAM, free disk, the
   paths the job needs, the interface that reaches the master, the latest checkpoint,
   and last a TCP connection to the master address and port. The master's own probe
   first binds that address and port exactly as torchrun will (a port in use, or an
   address the master does not have, fails here) and accepts every node's connection
   while it gathers its facts, so a wrong address or NIC fails in preflight, not in an
   NCCL hang. One SSH channel and one python per node, the master included. Stopping
   that listener early and judging its answer: launcher/preflight/rendezvous.py.

The result is data (frozen dataclasses); tuneboard/ renders it as a ✓/✗ table.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from launcher.cluster import Node
from launcher.errors import (
    AuthError,
    ConnectError,
    HostKeyChangedError,
    HostKeyUnknownError,
    LauncherError,
)
from launcher.preflight import node_probe
from launcher.preflight.rendezvous import Arrivals, Listen, listen_outcome
from launcher.target import Target
from launcher.transport.base import Transport
from launcher.transport.fanout import NodePool, NodeResult

CheckStatus = Literal["ok", "warn", "fail", "skip"]
#: Columns of the preflight table, in order.
CHECKS = (
    "ssh",
    "python",
    "packages",
    "versions",
    "gpus",
    "ram",
    "disk",
    "files",
    "data",
    "port",
    "master",
    "resume",
)
GIB = 1024**3
#: Preflight refuses less free disk than this whatever the estimate says.
MIN_DISK_BYTES = 1 * GIB
#: A GPU with less than this share of its memory free is reported (another job on it?).
BUSY_GPU_FREE_FRACTION = 0.9
CONNECT_TIMEOUT_S = 5.0
#: How long the master's listener waits for every node's probe to connect.
LISTEN_TIMEOUT_S = CONNECT_TIMEOUT_S * 6
#: How long the last other node's probe waits for the master's probe to listen or end, to
#: stop its listener early: past it the listener has (nearly) timed out by itself anyway.
MASTER_KNOWN_TIMEOUT_S = LISTEN_TIMEOUT_S + CONNECT_TIMEOUT_S
_PROBE_SOURCE = Path(node_probe.__file__).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    #: The whole story, shown below the table for failures and warnings.
    detail: str
    #: A few characters for the table cell.
    short: str = ""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_bytes: int
    memory_free_bytes: int | None


@dataclass(frozen=True)
class NodeFacts:
    """What the probe found on a node (parsed from its JSON at this boundary)."""

    python: str
    python_version: str
    hostname: str
    workdir: str
    packages: dict[str, str | None]
    modules: dict[str, bool]
    paths: dict[str, bool]
    latest_checkpoint: int | None
    cpu_count: int | None
    gpus: tuple[GpuInfo, ...]
    gpu_source: str | None
    gpu_error: str | None
    mem_total_bytes: int | None
    mem_available_bytes: int | None
    disk_path: str
    disk_free_bytes: int | None
    disk_error: str | None
    master_ip: str | None
    iface: str | None
    route_error: str | None
    #: This node's TCP connection to the master address: ok, error, seconds.
    connect: dict[str, Any]
    #: The master only: binding the master address and port (ok, errno, error) and the
    #: connections accepted.
    listen: dict[str, Any] | None = None


_FACTS = TypeAdapter(NodeFacts)


@dataclass(frozen=True)
class Needs:
    """What the job needs from every node."""

    #: Distributions whose versions must be installed and equal on every node.
    packages: tuple[str, ...]
    #: Modules that must be importable.
    modules: tuple[str, ...]
    #: Paths the job reads that are not copied by the launcher (relative to the workdir).
    paths: tuple[str, ...] = ()
    output_dir: str | None = None
    #: Free disk the job needs under the workdir.
    disk_bytes: int = MIN_DISK_BYTES
    #: A resumed job: every node must hold the same latest checkpoint.
    resume: bool = False


@dataclass(frozen=True)
class NodeReport:
    node: Node
    node_rank: int
    workdir: str
    checks: tuple[Check, ...]
    facts: NodeFacts | None
    connect_s: float

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)


@dataclass(frozen=True)
class PreflightReport:
    nodes: tuple[NodeReport, ...]
    master_addr: str
    master_port: int
    #: Processes per node: as given, or from the GPUs found (None: could not tell).
    nproc_per_node: int | None
    duration_s: float
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.nproc_per_node is not None and all(n.ok for n in self.nodes)

    @property
    def failures(self) -> tuple[tuple[str, Check], ...]:
        return tuple((n.node.name, c) for n in self.nodes for c in n.checks if c.status == "fail")


def master_address(target: Target, pool: NodePool) -> str:
    """The address every rank connects to: as given, else the master's SSH address."""
    if target.master_addr is not None:
        return target.master_addr
    master = pool.transports.get(target.cluster.master.name)
    resolved = getattr(master, "target", None)
    hostname = getattr(resolved, "hostname", None)
    return hostname if isinstance(hostname, str) else target.cluster.master.host


def run_preflight(pool: NodePool, target: Target, needs: Needs) -> PreflightReport:
    started = time.monotonic()
    addr = master_address(target, pool)
    port = target.master_port
    master_name = target.cluster.master.name
    ranks = {node.name: i for i, node in enumerate(target.cluster.nodes)}
    master = pool.transports.get(master_name)
    others = Arrivals(
        _done_sender(master, target.python, addr, port) if master is not None else None,
        len(pool.transports) - (master is not None),
        MASTER_KNOWN_TIMEOUT_S,
    )

    def probe(transport: Transport) -> NodeFacts:
        rank = ranks[transport.node.name]
        is_master = transport.node.name == master_name
        args: dict[str, Any] = {
            "workdir": target.workdir_of(rank),
            "packages": list(needs.packages),
            "modules": list(needs.modules),
            "paths": list(needs.paths),
            "output_dir": needs.output_dir,
            "master_addr": addr,
            "master_port": port,
            "is_master": is_master,
            "connect_timeout_s": CONNECT_TIMEOUT_S,
        }
        if is_master:  # it listens for every connected node's probe, its own included
            args["listen"] = {"count": len(pool.transports), "timeout_s": LISTEN_TIMEOUT_S}
            try:
                out = _run_probe(
                    transport, target.python, "facts", json.dumps(args), on_line=others.said
                )
            finally:
                others.master_ended()
            return _parse_facts(transport, out)
        came = False
        try:
            out = _run_probe(transport, target.python, "facts", json.dumps(args))
            facts = _parse_facts(transport, out)
            came = bool(facts.connect.get("ok"))
            return facts
        finally:
            others.arrived(came=came)

    probed = {r.node.name: r for r in pool.map(probe)}
    listen = _listen_outcome(probed.get(master_name), addr, port, others.stalled_s)
    reference = _reference_facts(target, probed)
    nproc = target.nproc_per_node
    notes: list[str] = []
    if others.stalled_s is not None and listen is not None and listen.ok:
        notes.append(
            f"the master's probe did not listen on {addr}:{port} within "
            f"{others.stalled_s:g} s of the other nodes' probes: its listener ran to its timeout"
        )
    if nproc is None:
        counts = [len(r.value.gpus) for r in probed.values() if r.value is not None]
        nproc = min(counts) if counts and min(counts) > 0 else None
        if nproc is not None:
            notes.append(f"{nproc} processes per node: one per GPU found")
    reports = []
    for node in target.cluster.nodes:
        rank = ranks[node.name]
        connected = next(r for r in pool.connect_results if r.node.name == node.name)
        checks = [_ssh_check(connected)]
        result = probed.get(node.name)
        facts = result.value if result is not None else None
        is_master = node.name == master_name
        if connected.ok and result is not None:
            checks += _node_checks(result, facts, reference, needs, target, nproc, is_master)
            if facts is not None:
                if is_master:
                    checks.append(_port_check(listen))
                checks.append(_master_check(facts.connect, listen, addr, port))
        reports.append(
            NodeReport(
                node, rank, target.workdir_of(rank), tuple(checks), facts, connected.duration_s
            )
        )
    return PreflightReport(
        tuple(reports), addr, port, nproc, time.monotonic() - started, tuple(notes)
    )


class ProbeError(LauncherError):
    def __init__(self, node: str, check: str, detail: str) -> None:
        super().__init__(f"{node}: {detail}")
        self.check = check
        self.detail = detail


def _done_sender(transport: Transport, python: str, addr: str, port: int) -> Callable[[], None]:
    """Tells the master's listener, through the master's own probe, to stop waiting."""

    def send() -> None:
        with contextlib.suppress(LauncherError):
            _run_probe(
                transport, python, "connect", addr, str(port), str(CONNECT_TIMEOUT_S), "done"
            )

    return send


def _run_probe(
    transport: Transport,
    python: str,
    *args: str,
    timeout_s: float = 60,
    on_line: Callable[[str], None] | None = None,
) -> str:
    result = transport.run(
        [python, "-c", _PROBE_SOURCE, *args], timeout_s=timeout_s, on_line=on_line
    )
    if result.returncode in (126, 127):
        raise ProbeError(transport.node.name, "python", f"python not found: {python}")
    if not result.ok:
        tail = " | ".join(result.stderr.strip().splitlines()[-2:])
        raise ProbeError(
            transport.node.name,
            "python",
            f"{python} failed the probe ({result.returncode}): {tail}",
        )
    return result.stdout


def _parse_facts(transport: Transport, stdout: str) -> NodeFacts:
    try:
        return _FACTS.validate_json(stdout.strip().splitlines()[-1])
    except (ValidationError, IndexError) as err:
        raise ProbeError(
            transport.node.name, "python", f"unreadable probe output: {str(err)[:200]}"
        ) from None


def _reference_facts(
    target: Target, probed: dict[str, NodeResult[NodeFacts]]
) -> tuple[str, NodeFacts] | None:
    for node in target.cluster.nodes:
        result = probed.get(node.name)
        if result is not None and result.value is not None:
            return node.name, result.value
    return None


def _ssh_check(connected: NodeResult[Transport]) -> Check:
    err = connected.error
    if err is not None:
        detail = err.reason if isinstance(err, ConnectError) else str(err)
        short = {HostKeyUnknownError: "unknown key", HostKeyChangedError: "KEY CHANGED"}.get(
            type(err), "auth" if isinstance(err, AuthError) else "unreachable"
        )
        return Check("ssh", "fail", detail, short)
    text = "local" if connected.node.local else f"{connected.duration_s * 1000:.0f} ms"
    return Check("ssh", "ok", text, text)


def _node_checks(
    result: NodeResult[NodeFacts],
    facts: NodeFacts | None,
    reference: tuple[str, NodeFacts] | None,
    needs: Needs,
    target: Target,
    nproc: int | None,
    is_master: bool,
) -> list[Check]:
    if facts is None:
        err = result.error
        check = err.check if isinstance(err, ProbeError) else "python"
        detail = err.detail if isinstance(err, ProbeError) else str(err)
        return [Check(check, "fail", detail, "not found" if "not found" in detail else "error")]
    checks = [Check("python", "ok", f"{facts.python_version} {facts.python}", facts.python_version)]
    checks.append(_packages_check(facts, needs))
    checks.append(_versions_check(facts, reference))
    checks.append(_gpus_check(facts, target.cpu, nproc))
    checks.append(_ram_check(facts))
    checks.append(_disk_check(facts, needs))
    missing = [p for p, exists in facts.paths.items() if not exists]
    if missing:
        checks.append(
            Check("files", "fail", "missing: " + ", ".join(missing), f"{len(missing)} missing")
        )
    else:
        found = f"{len(facts.paths)} found" if facts.paths else "nothing to check"
        checks.append(Check("files", "ok", found, str(len(facts.paths))))
    if needs.resume:
        checks.append(_resume_check(facts, reference, target.shared_fs, is_master=is_master))
    return checks


def _resume_check(
    facts: NodeFacts, reference: tuple[str, NodeFacts] | None, shared_fs: bool, *, is_master: bool
) -> Check:
    mine = facts.latest_checkpoint
    if is_master or reference is None:
        if mine is None:
            return Check("resume", "warn", "no checkpoint: the job starts from step 0", "none")
        return Check("resume", "ok", f"checkpoint-{mine}", f"step {mine}")
    if shared_fs:
        return Check("resume", "skip", "shared filesystem", "shared")
    ref_name, ref = reference
    if mine != ref.latest_checkpoint:
        have = f"checkpoint-{mine}" if mine is not None else "no checkpoint"
        return Check(
            "resume",
            "fail",
            f"{have} here, checkpoint-{ref.latest_checkpoint} on {ref_name}: every rank must "
            "resume from the same step (copy it, or use shared_fs)",
            "differs",
        )
    return Check(
        "resume", "ok", f"checkpoint-{mine}" if mine is not None else "none", f"step {mine}"
    )


def _packages_check(facts: NodeFacts, needs: Needs) -> Check:
    missing = [p for p, v in facts.packages.items() if v is None]
    unimportable = [m for m, ok in facts.modules.items() if not ok]
    if missing or unimportable:
        parts = []
        if missing:
            parts.append(
                f"not installed: {', '.join(missing)} (for {facts.python}: install torch for "
                f"the node's CUDA, then `{facts.python} -m pip install 'tuneboard[train]'` there, "
                "or name the python that has them with cluster.python / cluster.venv)"
            )
        if unimportable:
            parts.append("not importable: " + ", ".join(unimportable))
        return Check("packages", "fail", "; ".join(parts), f"{len(missing + unimportable)} missing")
    shown = ", ".join(f"{p} {v}" for p, v in facts.packages.items())
    torch = facts.packages.get("torch")
    return Check("packages", "ok", shown, f"torch {torch}" if torch else str(len(facts.packages)))


def _versions_check(facts: NodeFacts, reference: tuple[str, NodeFacts] | None) -> Check:
    if reference is None or reference[1] is facts:
        return _local_version_check(facts)
    ref_name, ref = reference
    differ = [
        f"{p} {v} ≠ {ref.packages.get(p)}"
        for p, v in facts.packages.items()
        if v != ref.packages.get(p)
    ]
    if facts.python_version.rsplit(".", 1)[0] != ref.python_version.rsplit(".", 1)[0]:
        differ.append(f"python {facts.python_version} ≠ {ref.python_version}")
    if differ:
        return Check(
            "versions", "fail", f"differ from {ref_name}: " + ", ".join(differ), f"≠ {ref_name}"
        )
    return _local_version_check(facts, f"same as {ref_name}")


def _local_version_check(facts: NodeFacts, ok_text: str = "the reference") -> Check:
    node_version = facts.packages.get("tuneboard")
    try:
        here = metadata.version("tuneboard")
    except metadata.PackageNotFoundError:
        here = None
    if node_version is not None and here is not None and node_version != here:
        return Check(
            "versions",
            "warn",
            f"tuneboard {node_version} on the node, {here} here; {ok_text}",
            "≠ launcher",
        )
    return Check("versions", "ok", ok_text, "=" if ok_text.startswith("same") else "ref")


def _gpus_check(facts: NodeFacts, cpu: bool, nproc: int | None) -> Check:
    gpus = facts.gpus
    if not gpus:
        if cpu:
            return Check("gpus", "ok", "no GPU (CPU run)", "CPU run")
        return Check(
            "gpus",
            "fail",
            f"no GPU ({facts.gpu_error or 'none found'}); for a CPU run: --cpu",
            "no GPU",
        )
    names = sorted({g.name for g in gpus})
    short = f"{len(gpus)}×{_short_gpu(names[0])}"
    if cpu:
        return Check("gpus", "ok", f"CPU run ({len(gpus)} GPUs left idle)", "CPU run")
    if len(names) > 1:
        return Check("gpus", "fail", "mixed GPU models: " + ", ".join(names), "mixed")
    if nproc is not None and len(gpus) < nproc:
        return Check(
            "gpus", "fail", f"{len(gpus)}x {names[0]}, the job needs {nproc} per node", short
        )
    free = [g.memory_free_bytes for g in gpus if g.memory_free_bytes is not None]
    text = f"{len(gpus)}x {names[0]}"
    if free:
        text += f", ≥{min(free) / GIB:.1f} GiB free"
    busy = [
        g
        for g in gpus
        if g.memory_free_bytes is not None
        and g.memory_free_bytes < BUSY_GPU_FREE_FRACTION * g.memory_total_bytes
    ]
    if busy:
        used = ", ".join(
            f"GPU {g.index}: {(g.memory_total_bytes - (g.memory_free_bytes or 0)) / GIB:.1f} GiB"
            for g in busy
        )
        return Check("gpus", "warn", f"{text}; in use by another process: {used}", short)
    return Check("gpus", "ok", text, short)


def _short_gpu(name: str) -> str:
    """`NVIDIA A800-SXM4-80GB` -> `A800`."""
    words = [w for w in name.replace("NVIDIA", "").split() if w]
    return (words[0].split("-")[0] if words else name)[:8]


def _ram_check(facts: NodeFacts) -> Check:
    if facts.mem_total_bytes is None:
        return Check("ram", "warn", "unknown (no /proc/meminfo)", "?")
    avail = facts.mem_available_bytes
    tail = f" ({avail / GIB:.0f} available)" if avail is not None else ""
    total = f"{facts.mem_total_bytes / GIB:.0f} GiB"
    return Check("ram", "ok", f"{total}{tail}", total)


def _disk_check(facts: NodeFacts, needs: Needs) -> Check:
    free = facts.disk_free_bytes
    if free is None:
        return Check(
            "disk", "warn", f"free space unknown at {facts.disk_path}: {facts.disk_error}", "?"
        )
    need = max(needs.disk_bytes, MIN_DISK_BYTES)
    text = f"{free / GIB:.1f} GiB free at {facts.disk_path}"
    short = f"{free / GIB:.0f} GiB"
    if free < need:
        return Check("disk", "fail", f"{text}; checkpoints need ≥ {need / GIB:.1f} GiB", short)
    return Check("disk", "ok", text, short)


# -- the master's address and port ------------------------------------------------------------


def _listen_outcome(
    master: NodeResult[NodeFacts] | None, addr: str, port: int, stalled_s: float | None
) -> Listen | None:
    """What the master's probe says of its listener (None: not checked)."""
    if master is None:
        return None  # the master is not connected: the ssh check says why
    err = master.error
    if isinstance(err, ProbeError) and err.check == "python":
        return None  # the python check already says why
    answer = master.value.listen if master.value is not None else None
    return listen_outcome(err, answer, addr, port, stalled_s)


def _port_check(listen: Listen | None) -> Check:
    if listen is None:
        return Check("port", "skip", "not checked")
    return Check("port", "ok" if listen.ok else "fail", listen.detail, listen.short)


def _master_check(connect: dict[str, Any], listen: Listen | None, addr: str, port: int) -> Check:
    if listen is None:
        return Check("master", "skip", "not checked")
    if not listen.ok:
        return Check("master", "fail", f"nothing to connect to: {listen.detail}", "-")
    if not connect.get("ok"):
        error = str(connect.get("error"))
        return Check("master", "fail", f"cannot reach {addr}:{port}: {error}", error[:12])
    ms = float(connect.get("seconds", 0)) * 1000
    return Check("master", "ok", f"{addr}:{port} in {ms:.0f} ms", f"{ms:.0f} ms")
