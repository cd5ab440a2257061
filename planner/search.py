"""Enumerate setups, estimate each, keep what fits, rank, recommend, explain.

Ranking: method preference first when the method is open (full, then LoRA,
then QLoRA; see setups.DEFAULT_METHODS), then estimated tokens/s; ties go to
less sharding, no offload and the larger micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.memory.breakdown import MemoryBreakdown, estimate_memory
from planner.setups import METHODS, Constraints, Setup, enumerate_setups
from planner.specs import ClusterSpec, ModelSpec
from planner.timing import TimeEstimate, estimate_time

GIB = 1024**3
MAX_REJECTIONS = 5
#: A recommendation above this share of usable GPU memory gives way to a setup below it
#: that is at least SPEED_TOLERANCE as fast (`_recommend`).
SAFE_FRACTION = 0.90
SPEED_TOLERANCE = 0.97


@dataclass(frozen=True)
class Candidate:
    setup: Setup
    memory: MemoryBreakdown
    time: TimeEstimate
    fits: bool
    notes: tuple[str, ...]
    source: str = "analytic"  # "trace" when --trace measured its activations


@dataclass(frozen=True)
class Plan:
    model: ModelSpec
    cluster: ClusterSpec
    constraints: Constraints
    candidates: tuple[Candidate, ...]  # ranked, best first
    recommended: int | None  # index into candidates
    rejected: tuple[str, ...]  # one line per better-looking candidate that does not fit
    notes: tuple[str, ...]

    @property
    def recommendation(self) -> Candidate | None:
        return None if self.recommended is None else self.candidates[self.recommended]


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def memory_fits(mem: MemoryBreakdown, cluster: ClusterSpec) -> bool:
    """GPU memory, host RAM, and NVMe when its size is known."""
    nvme_ok = cluster.nvme_bytes is None or mem.host.nvme_bytes <= cluster.nvme_bytes
    return mem.fits_gpu and mem.fits_host and nvme_ok


def why_not(c: Candidate, cluster: ClusterSpec) -> str | None:
    """One line on why a candidate does not fit (the checks of `memory_fits`); None when it does."""
    m = c.memory
    if not m.fits_gpu:
        return f"{m.total_bytes / GIB:.1f} GiB > {m.usable_bytes / GIB:.1f} GiB usable per GPU"
    if not m.fits_host:
        return (
            f"host RAM {m.host.cpu_bytes / GIB:.0f} GiB > {m.usable_host_bytes / GIB:.0f} GiB "
            "usable per node"
        )
    if cluster.nvme_bytes is not None and m.host.nvme_bytes > cluster.nvme_bytes:
        return f"NVMe {gib(m.host.nvme_bytes)} > {gib(cluster.nvme_bytes)} free per node"
    return None


def _notes(spec: ModelSpec, cluster: ClusterSpec, setup: Setup, mem: MemoryBreakdown) -> list[str]:
    notes: list[str] = []
    if mem.host.loading_cpu_bytes > cluster.node_ram_bytes:
        notes.append(
            f"loading: {cluster.gpus_per_node} ranks each load the model into host RAM at once, "
            f"{gib(mem.host.loading_cpu_bytes)} > {gib(cluster.node_ram_bytes)} node RAM; "
            "load with ZeRO-3 (zero.Init) or stagger the ranks"
        )
    if cluster.nvme_bytes is not None and mem.host.nvme_bytes > cluster.nvme_bytes:
        notes.append(f"NVMe: {gib(mem.host.nvme_bytes)} > {gib(cluster.nvme_bytes)} free per node")
    if setup.tp > 1 or setup.pp > 1:
        notes.append(
            "TP/PP are planned Megatron-style; tuneboard's recipes run data-parallel "
            "(DeepSpeed/FSDP) only"
        )
    if setup.method == "qlora":
        notes.append(
            "QLoRA: 4-bit NF4 + double quant; embeddings, lm_head and norms in fp32 "
            "(prepare_model_for_kbit_training)"
        )
    if setup.method == "qlora" and spec.is_moe:
        notes.append(
            "QLoRA on MoE: transformers 5 stores experts as 3D tensors, which bitsandbytes "
            "does not quantize, and PEFT's prepare_model_for_kbit_training casts them to "
            "fp32: counted at 4 bytes per expert weight (as loaded; with transformers 4 "
            "they were 4-bit)"
        )
    if setup.optimizer == "paged-adamw-8bit":
        notes.append("paged AdamW: states may page to host RAM under pressure (counted on GPU)")
    return notes


def _family(s: Setup) -> str:
    """A setup's label without its micro-batch."""
    return " ".join(p for p in s.label().split() if not p.startswith("mb"))


def _sort_key(c: Candidate, method_rank: dict[str, int]) -> tuple[float, ...]:
    s = c.setup
    sharding = s.zero_stage if s.zero_stage is not None else 3
    offload = (s.offload_optimizer != "none") + (s.offload_params != "none")
    return (
        method_rank.get(s.method, 99),
        -round(c.time.tokens_per_s, 6),
        sharding,
        offload,
        -s.micro_batch_size,
        float(s.gradient_checkpointing),
    )


def _recommend(candidates: list[Candidate]) -> int | None:
    """The first candidate that fits, unless it leaves little headroom: then the first
    that stays under SAFE_FRACTION of usable memory at nearly its speed (same method).

    An estimate is an estimate; a run at 99% of usable memory OOMs on the first longer
    batch or allocator hiccup, and a setup as fast with room to spare is the better
    advice (a same-speed ZeRO-1 at 75.3 of 75.7 GiB was once chosen over ZeRO-3 at 34.8).
    """
    first = next((i for i, c in enumerate(candidates) if c.fits), None)
    if first is None:
        return None
    best = candidates[first]
    if best.memory.total_bytes <= SAFE_FRACTION * best.memory.usable_bytes:
        return first
    for i, c in enumerate(candidates):
        if (
            c.fits
            and c.setup.method == best.setup.method
            and c.memory.total_bytes <= SAFE_FRACTION * c.memory.usable_bytes
            and c.time.tokens_per_s >= SPEED_TOLERANCE * best.time.tokens_per_s
        ):
            return i
    return first


def make_plan(spec: ModelSpec, cluster: ClusterSpec, constraints: Constraints) -> Plan:
    setups = enumerate_setups(constraints, spec, cluster)
    candidates: list[Candidate] = []
    for setup in setups:
        mem = estimate_memory(spec, cluster, setup)
        est = estimate_time(spec, cluster, setup)
        fits = memory_fits(mem, cluster)
        candidates.append(
            Candidate(setup, mem, est, fits, tuple(_notes(spec, cluster, setup, mem)))
        )
    order = list(METHODS) if constraints.method else ["full", "lora", "qlora", "dora", "freeze"]
    method_rank = {m: i for i, m in enumerate(order)}
    candidates.sort(key=lambda c: _sort_key(c, method_rank))
    recommended = _recommend(candidates)

    rejected: list[str] = []
    plan_notes: list[str] = []
    if spec.note:
        plan_notes.append(spec.note)
    if recommended is None:
        plan_notes.append("nothing fits: see the smallest candidates below")
    else:
        first = next(c for c in candidates if c.fits)
        chosen = candidates[recommended]
        if first is not chosen:
            m = first.memory
            plan_notes.append(
                f"{first.setup.label()} fits at {m.total_bytes / GIB:.1f} GiB "
                f"({m.total_bytes / m.usable_bytes:.0%} of usable) with no room to spare: "
                f"recommending {chosen.setup.label()} at "
                f"{chosen.memory.total_bytes / GIB:.1f} GiB, nearly as fast"
            )
        best = chosen
        for method in order:
            if method_rank[method] >= method_rank[best.setup.method]:
                break
            tried = [c for c in candidates if c.setup.method == method]
            if tried:
                smallest = min(tried, key=lambda c: c.memory.total_bytes)
                rejected.append(
                    f"{method}: nothing fits (smallest, {smallest.setup.label()}: "
                    f"{why_not(smallest, cluster)})"
                )
        # Families (same setup except the micro-batch) that rank above the
        # recommendation and have no member that fits: say why, smallest first.
        above = {
            _family(c.setup)
            for c in candidates[:recommended]
            if c.setup.method == best.setup.method
        }
        families: dict[str, list[Candidate]] = {}
        for c in candidates:
            if c.setup.method == best.setup.method and _family(c.setup) in above:
                families.setdefault(_family(c.setup), []).append(c)
        for family, members in families.items():
            if any(m.fits for m in members) or len(rejected) >= MAX_REJECTIONS:
                continue
            smallest = min(members, key=lambda c: c.memory.total_bytes)
            rejected.append(
                f"{family} (mb{smallest.setup.micro_batch_size}): {why_not(smallest, cluster)}"
            )
    return Plan(
        model=spec,
        cluster=cluster,
        constraints=constraints,
        candidates=tuple(candidates),
        recommended=recommended,
        rejected=tuple(rejected),
        notes=tuple(plan_notes),
    )
