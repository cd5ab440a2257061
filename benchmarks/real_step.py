"""`python benchmarks/real_step.py --config CONFIG.json --method lora --zero 0,3`: two real
training iterations per (method, ZeRO stage) on CUDA (or CPU), one JSON line each.

The measurement itself is tests/support/real_step.py (shared with the CPU test that keeps
its code path working); this file is its command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.real_step import (  # noqa: E402
    DEVICES,
    NoCudaError,
    measurement_dict,
    one_gpu_setup,
    real_training_step,
)


def main(argv: list[str] | None = None) -> int:
    """`python benchmarks/real_step.py --config CONFIG.json --method lora --zero 0,3`: one
    JSON line per (method, ZeRO stage), in this process one after the other."""
    import argparse
    import json

    from planner.setups import METHODS, PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", required=True, help="transformers config: a JSON file")
    parser.add_argument("--method", default="full", help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--zero", default="0", help="comma list of ZeRO stages (0: no DeepSpeed)")
    parser.add_argument("--device", choices=DEVICES, default="cuda")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="default: bf16-pure on ZeRO-0, bf16-mixed under DeepSpeed",
    )
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--ckpt", action="store_true", help="gradient checkpointing")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args(argv)
    try:
        config = json.loads(Path(args.config).read_text(encoding="utf-8"))
        methods = [m.strip() for m in args.method.split(",") if m.strip()]
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ValueError(f"--method {','.join(bad)}: use {', '.join(METHODS)}")
        zeros = [int(z) for z in args.zero.split(",")]
        for method in methods:
            for zero in zeros:
                result = real_training_step(
                    config,
                    one_gpu_setup(
                        method,
                        zero=zero,
                        ckpt=args.ckpt,
                        micro_batch=args.micro_batch,
                        seq_len=args.seq_len,
                        lora_rank=args.lora_rank,
                        precision=args.precision,
                    ),
                    device=args.device,
                    learning_rate=args.lr,
                )
                print(json.dumps(measurement_dict(result)), flush=True)
    except (OSError, ValueError, NoCudaError) as exc:
        print(f"real_step: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
