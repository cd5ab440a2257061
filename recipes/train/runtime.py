"""Where a training process runs: ranks, device, the status file, resume, precision.

Standard library at import time; torch is imported inside the functions that need it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from recipes.schema import PrecisionKind, Recipe

Phase = Literal["loading", "training", "saving", "done", "failed"]


@dataclass(frozen=True)
class RunContext:
    """This process's place in the job (from torchrun's environment; 1 process without it)."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    cuda: bool
    output_dir: Path

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))

    @classmethod
    def from_env(cls, output_dir: Path) -> RunContext:
        import torch

        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(
            rank=int(env.get("RANK", "0")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            world_size=world,
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))),
            cuda=torch.cuda.is_available(),
            output_dir=output_dir,
        )


class StatusFile:
    """`<output>/status.json`, written atomically by global rank 0 only.

    Fields: phase (loading | training | saving | done | failed), error (str or null),
    step, total_steps, updated_at (unix seconds), pid, world_size, plus phase details.
    """

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.path = output_dir / "status.json"
        self.enabled = enabled
        self.fields: dict[str, Any] = {"phase": "loading", "error": None}

    def update(self, phase: Phase | None = None, **fields: Any) -> None:
        if phase is not None:
            self.fields["phase"] = phase
        self.fields.update(fields)
        if not self.enabled:
            return
        self.fields["updated_at"] = time.time()
        self.fields["pid"] = os.getpid()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.fields, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(recipe: Recipe, ctx: RunContext) -> None:
    """Start the process group before the model is built.

    ZeRO-3 partitions parameters while from_pretrained creates them (zero.Init), which needs
    the real world size: DeepSpeed must be initialised first (measured: otherwise zero.Init
    sees a world of 1). A single process with DeepSpeed also needs a (1-rank) group, so the
    torchrun variables are filled in for it.
    """
    from datetime import timedelta

    dist_cfg = recipe.distributed
    if ctx.world_size == 1 and not dist_cfg.uses_deepspeed:
        return
    if "MASTER_ADDR" not in os.environ:
        os.environ.update(
            RANK="0",
            LOCAL_RANK="0",
            WORLD_SIZE="1",
            LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(free_port()),
        )
    timeout = timedelta(seconds=dist_cfg.timeout_s)
    backend = "nccl" if ctx.cuda else "gloo"
    if dist_cfg.uses_deepspeed:
        import deepspeed

        if not ctx.cuda:
            # On CPU DeepSpeed compiles a shared-memory all-reduce op at init (measured here:
            # 60-90 s on 2 busy cores) before it can train; gloo does the same job for a CPU
            # run. Its compatibility table is only read for that op.
            import deepspeed.ops

            deepspeed.ops.__compatible_ops__ = {}
        deepspeed.init_distributed(dist_backend=backend, timeout=timeout)
    else:
        import torch.distributed as dist

        if not dist.is_initialized():
            if ctx.cuda:
                import torch

                torch.cuda.set_device(ctx.local_rank)
            dist.init_process_group(backend=backend, timeout=timeout)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown_distributed(clean: bool) -> None:
    """barrier + destroy_process_group at exit (measured: without it, an occasional SIGABRT).

    After a failure there is no barrier: the other ranks may never reach it.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def effective_precision(recipe: Recipe, ctx: RunContext) -> PrecisionKind:
    """The recipe's precision, except fp16 without CUDA: fp32 then (CPU has no fp16 AMP)."""
    precision = recipe.training.precision
    if precision == "fp16-mixed" and not ctx.cuda:
        log(ctx, "training.precision fp16-mixed needs CUDA; running in fp32 on this CPU")
        return "fp32"
    return precision


def resume_checkpoint(recipe: Recipe, output_dir: Path) -> str | None:
    """training.resume: auto -> latest checkpoint-N in output.dir (or None), none, or a path."""
    resume = recipe.training.resume
    if resume == "none":
        return None
    if resume != "auto":
        return str(Path(resume).expanduser())
    best: tuple[int, Path] | None = None
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            name = child.name
            step = name[11:]
            if (
                name.startswith("checkpoint-")
                and step.isdigit()
                and (child / "trainer_state.json").is_file()
                and (best is None or int(step) > best[0])
            ):
                best = (int(step), child)
    return str(best[1]) if best else None


def log(ctx: RunContext | None, message: str) -> None:
    """One line on stderr, prefixed like the launcher's streams (rank 0 only)."""
    if ctx is None or ctx.is_main:
        print(f"[tuneboard] {message}", file=sys.stderr, flush=True)
