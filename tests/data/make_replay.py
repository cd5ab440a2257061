"""Write tests/data/replay-3x8-a800.jsonl: a synthetic 3-node × 8 × A800 fine-tune.

    python tests/data/make_replay.py            # rewrite the file (deterministic)
    python tests/data/make_replay.py --check    # exit 1 if the file differs from what this makes

What it holds (recorded clock starts at 2024-06-10 06:13:20 UTC, ~280 s):
- llama-2-13b full fine-tune, ZeRO-3, seq 2048, 160 steps of ~1.5 s (~33k tokens/s ≈ 37 % MFU)
- loading 0-20 s (GPU memory fills, util low), training, saving at the end, then done
- loss 1.95 -> ~1.05 with noise, a grad-norm spike at step 70, lr warmup + cosine decay
- node02 straggles from 110 s (util ~40 %, slower steps) and goes silent 120-134 s
- GPU and host samples every 3 s per node (PCIe every 5th sample, as the sampler does);
  metrics, status and logs as the job's files would give them
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tuneboard.sources.codec import encode  # noqa: E402
from tuneboard.sources.fake_nvml import A800_MEMORY_BYTES, A800_NAME  # noqa: E402
from tuneboard.sources.recipe_info import model_flops_per_token  # noqa: E402
from tuneboard.sources.snapshots import (  # noqa: E402
    GpuProcess,
    GpuSample,
    GpuSnapshot,
    HostSnapshot,
    JobInfo,
    LogSnapshot,
    MetricsSnapshot,
    Snapshot,
    StatusSnapshot,
    StepMetrics,
)

OUT = Path(__file__).with_name("replay-3x8-a800.jsonl")
T0 = 1718000000.0
NODES = ("node00", "node01", "node02")
GPUS = 8
GIB = 1 << 30
LOAD_END, STEP_S, STEPS = 20.0, 1.5, 160
SAMPLE_S = 3.0
SLOW_FROM, SILENT_FROM, SILENT_TO = 110.0, 120.0, 134.0
TOKENS_PER_STEP = 24 * 2048  # micro-batch 1 on 24 GPUs, seq 2048


def step_times() -> list[float]:
    rng = random.Random(7)
    times, t = [], LOAD_END + 4.0
    for _ in range(STEPS):
        slow = SLOW_FROM <= t < SILENT_TO + 2
        t += STEP_S * (2.1 if slow else 1.0) * rng.uniform(0.97, 1.03)
        times.append(round(t, 3))
    return times


def lr_at(step: int) -> float:
    peak, warm = 2e-5, 10
    if step <= warm:
        return peak * step / warm
    progress = (step - warm) / (STEPS - warm)
    return 2e-6 + (peak - 2e-6) * 0.5 * (1 + math.cos(math.pi * progress))


def metrics(times: list[float]) -> list[tuple[float, StepMetrics]]:
    rng = random.Random(11)
    out = []
    for i, t in enumerate(times):
        step = i + 1
        loss = 1.05 + 0.9 * math.exp(-step / 35) + rng.gauss(0, 0.035)
        grad = 0.55 + 1.0 * math.exp(-step / 25) + abs(rng.gauss(0, 0.05))
        if step == 70:
            grad *= 4.5
        dt = t - (times[i - 1] if i else LOAD_END + 4.0)
        elapsed = t - LOAD_END
        eta = (STEPS - step) * (elapsed / step)
        out.append(
            (
                t,
                StepMetrics(
                    step=step,
                    total_steps=STEPS,
                    epoch=round(step / STEPS, 4),
                    loss=round(loss, 4),
                    grad_norm=round(grad, 4),
                    learning_rate=lr_at(step),
                    tokens_seen=step * TOKENS_PER_STEP,
                    tokens_per_s=round(TOKENS_PER_STEP / dt, 1),
                    elapsed_s=round(elapsed, 2),
                    eta_s=round(eta, 1),
                    gpu_mem_peak_bytes=61 * GIB + 734 * (1 << 20),
                ),
            )
        )
    return out


def gpu_load(node: int, t: float, end: float) -> float:
    if t < LOAD_END:
        return 0.02 + 0.03 * (t / LOAD_END)
    if t > end:
        return 0.08
    if node == 2 and SLOW_FROM <= t < SILENT_TO:
        return 0.42
    return 0.93 + 0.05 * math.sin(t / 4 + node)


PcieCache = dict[tuple[int, int], tuple[float, float]]


def gpu_snapshot(
    node: int, t: float, end: float, n: int, rng: random.Random, pcie: PcieCache
) -> GpuSnapshot:
    """`t` and `end` in seconds from the start of the recording."""
    gpus = []
    for i in range(GPUS):
        load = max(0.0, min(1.0, gpu_load(node, t, end) + rng.gauss(0, 0.015)))
        if t < LOAD_END:
            used = int((1.2 + 38 * t / LOAD_END) * GIB)
        else:
            used = (58 + (i + node) % 4) * GIB + rng.randrange(0, 512) * (1 << 20)
        if n % 5 == 0 or (node, i) not in pcie:
            pcie[node, i] = (float(round(9.2e8 * load, -5)), float(round(6.1e8 * load, -5)))
        gpus.append(
            GpuSample(
                index=i,
                name=A800_NAME,
                uuid=f"GPU-{node:02d}{i:02d}a800-0000-0000-0000-00000000{node}{i}",
                util_percent=float(round(100 * load)),
                memory_util_percent=float(round(55 * load)),
                memory_used_bytes=used,
                memory_total_bytes=A800_MEMORY_BYTES,
                memory_reserved_bytes=512 << 20,
                temperature_c=float(round(38 + 32 * load + (i % 3))),
                power_mw=float(round(400_000 * (0.15 + 0.78 * load), -3)),
                power_limit_mw=400_000.0,
                sm_clock_mhz=float(1410 if load > 0.2 else 1095),
                sm_clock_max_mhz=1410.0,
                pcie_tx_bytes_per_s=pcie[node, i][0],
                pcie_rx_bytes_per_s=pcie[node, i][1],
                ecc_corrected_errors=0,
                ecc_uncorrected_errors=0,
                processes=(GpuProcess(31400 + node * 10 + i, "python", used - 700 * (1 << 20)),),
            )
        )
    return GpuSnapshot(NODES[node], T0 + t, tuple(gpus), driver_version="535.183.06")


def host_snapshot(node: int, t: float, rng: random.Random) -> HostSnapshot:
    return HostSnapshot(
        node=NODES[node],
        time_s=T0 + t,
        cpu_percent=round(28 + rng.uniform(0, 9), 1),
        cpu_count=128,
        memory_used_bytes=(372 + node * 9) * GIB + rng.randrange(0, 2048) * (1 << 20),
        memory_total_bytes=1007 * GIB,
        load_1m=round(30 + rng.uniform(0, 6), 2),
    )


def startup_logs(node: int) -> list[tuple[float, str]]:
    name = NODES[node]
    lines = [
        (0.5, f"[{name}] torchrun --nnodes 3 --node-rank {node} --nproc-per-node 8"),
        (2.0, f"[{name}/rank{node * 8}] NCCL INFO Bootstrap : Using ib0:10.0.0.{11 + node}<0>"),
        (3.5, f"[{name}/rank{node * 8}] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB ; OOB ib0"),
        (9.0, f"[{name}/rank{node * 8}] Loading checkpoint shards: 100%|██████| 3/3"),
        (18.0, f"[{name}/rank{node * 8}] DeepSpeed ZeRO-3: partitioned 13.0B params"),
    ]
    if node == 0:
        lines += [
            (1.0, "[node00/rank0] tuneboard recipe llama2-13b-sft: full, ZeRO-3, seq 2048"),
            (19.5, "[node00/rank0] ***** Running training ***** steps 160, batch 24"),
        ]
    if node == 2:
        lines += [
            (118.0, "[node02/rank17] NCCL WARN Call to ibv_poll_cq slow (9.8 s)"),
            (135.0, "[node02/rank16] watchdog: collective resumed after 14.6 s"),
        ]
    return lines


def build() -> list[tuple[float, str, Snapshot]]:
    rng = random.Random(3)
    times = step_times()
    end = times[-1]
    events: list[tuple[float, str, Snapshot]] = []
    job = "job:runs/llama2-13b-sft"
    flops = model_flops_per_token("llama-2-13b", 2048, "full")
    assert flops is not None
    events.append(
        (
            0.0,
            job,
            JobInfo(T0, "llama2-13b-sft", "llama-2-13b", flops[0], round(flops[1]), 24),
        )
    )
    events.append((0.2, job, StatusSnapshot(T0 + 0.2, "loading")))
    events.append((LOAD_END, job, StatusSnapshot(T0 + LOAD_END, "training")))
    events.append((end + 1, job, StatusSnapshot(T0 + end + 1, "saving")))
    events.append((end + 16, job, StatusSnapshot(T0 + end + 16, "done")))
    pending: list[StepMetrics] = []
    last_flush = 0.0
    for t, record in metrics(times):
        t = round(t, 3)
        pending.append(record)
        if t - last_flush >= 1.0:  # the tailer reads about once a second
            events.append((t, job, MetricsSnapshot(T0 + t, tuple(pending))))
            pending, last_flush = [], t
    if pending:
        events.append((end, job, MetricsSnapshot(T0 + end, tuple(pending))))
    for node in range(len(NODES)):
        for rel, line in startup_logs(node):
            log = LogSnapshot(NODES[node], T0 + rel, (line,))
            events.append((rel, f"agent:{NODES[node]}", log))
    for t, record in metrics(times):
        text = (
            f"[node00/rank0] {{'loss': {record.loss}, 'grad_norm': {record.grad_norm}, "
            f"'learning_rate': {record.learning_rate:.3e}, 'epoch': {record.epoch}}}"
        )
        events.append((t + 0.05, "agent:node00", LogSnapshot("node00", T0 + t + 0.05, (text,))))
    saving = "[node00/rank0] Saving model checkpoint to output/"
    events.append((end + 2, "agent:node00", LogSnapshot("node00", T0 + end + 2, (saving,))))
    horizon = end + 20
    pcie: PcieCache = {}
    for n, k in enumerate(range(int(horizon / SAMPLE_S) + 1)):
        for node in range(len(NODES)):
            t = round(k * SAMPLE_S + 0.1 * node + rng.uniform(0, 0.05), 3)
            if node == 2 and SILENT_FROM <= t < SILENT_TO:
                continue
            source = f"agent:{NODES[node]}"
            events.append((t, source, gpu_snapshot(node, t, end, n, rng, pcie)))
            events.append((t, source, host_snapshot(node, t, rng)))
    events.sort(key=lambda e: e[0])
    return events


def render() -> str:
    lines = [json.dumps({"tuneboard_record": 1, "started_at": T0}, separators=(",", ":"))]
    for rel, source, snapshot in build():
        obj = {"t": round(T0 + rel, 3), "source": source, "snapshot": encode(snapshot)}
        lines.append(json.dumps(obj, separators=(",", ":")))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"{OUT.name} is not what make_replay.py makes; rerun it\n")
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text.encode()) / 1e6:.2f} MB, {text.count(chr(10)) - 1} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
