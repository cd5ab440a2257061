"""A light torchrun program for the launcher's tests: real gloo ranks that start in about a
second (torch only, no model), so the tests can fail, kill and interrupt them cheaply.

Every rank joins the process group, does one all_reduce (so all four really met), then
prints a step every 0.1 s. It never talks to the others again: a rank whose peer died
keeps going, as a rank waiting on a dead peer would hang for 30 minutes, so only the
launcher's stop ends the job. TB_TEST_FAIL_RANK=N makes rank N raise at step 5;
TB_TEST_STEPS=N ends every rank cleanly after N steps (0: never).
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    total = torch.ones(1)
    dist.all_reduce(total)
    print(f"rank {rank} of {int(total.item())} up, pid {os.getpid()}", flush=True)
    fail_rank = int(os.environ.get("TB_TEST_FAIL_RANK", "-1"))
    steps = int(os.environ.get("TB_TEST_STEPS", "0"))
    i = 0
    while steps == 0 or i < steps:
        if rank == fail_rank and i == 5:
            raise RuntimeError(f"injected failure on rank {rank}")
        print(f"rank {rank} step {i}", flush=True)
        time.sleep(0.1)
        i += 1
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
