"""Trainer callbacks: `<output>/metrics.jsonl`, status.json phases, and the NaN/inf loss guard.

metrics.jsonl: one JSON object per line, appended by global rank 0 at every logging step
and every evaluation, flushed per line (a tailer never sees half a line). Keys:

  event              "train" | "eval"
  step, total_steps  optimizer steps (global; total is the Trainer's max_steps)
  epoch              float
  loss               mean training loss over the logging window (null on eval lines)
  grad_norm          before clipping (null where the backend does not report it)
  learning_rate
  tokens_seen        input tokens (non-padding) over all ranks since the run began (GRPO:
                     prompt + sampled completion; ORPO/SimPO: counted by recipes.train.preference);
                     null where a trainer counts none
  tokens_per_s       tokens_seen growth over wall time since the previous line
  elapsed_s          wall seconds since this process started training
  eta_s              remaining steps x mean step time of this process (null at step 0)
  gpu_mem_peak_bytes torch.cuda.max_memory_allocated() on rank 0; null without CUDA
  memory             (train lines) every rank's peaks so far, in rank order: rank, node,
                     pid, device, allocated_peak_bytes, reserved_peak_bytes,
                     device_used_bytes, rss_peak_bytes (recipes/train/memory_peaks.py)
  eval_*             evaluation metrics (eval_loss, ...) on eval lines
  extra              other numbers the trainer logged (TRL: mean_token_accuracy,
                     rewards/chosen, ...)

A resumed run appends to the same file; its steps continue from the checkpoint's.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from recipes.train.memory_peaks import gather_peaks
from recipes.train.runtime import StatusFile

_STANDARD = {"loss", "grad_norm", "learning_rate", "epoch", "num_input_tokens_seen", "step"}


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf and training.nan_policy is stop."""


class MetricsCallback(TrainerCallback):
    """Writes metrics.jsonl and keeps status.json's step counter current (rank 0)."""

    def __init__(self, output_dir: Path, status: StatusFile) -> None:
        self.path = output_dir / "metrics.jsonl"
        self.status = status
        self._t0 = time.monotonic()
        self._step0 = 0
        self._last_t = self._t0
        self._last_tokens = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = self._last_t = time.monotonic()
        self._step0 = state.global_step
        self._last_tokens = state.num_input_tokens_seen or 0
        self.status.update("training", step=state.global_step, total_steps=state.max_steps)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        logs = logs or {}
        is_eval = any(k.startswith("eval_") for k in logs)
        # Every rank logs the same (reduced) keys at the same step, so every rank takes
        # part in this gather, or none does.
        memory = (
            gather_peaks(args.process_index, args.local_process_index)
            if "loss" in logs and not is_eval
            else None
        )
        if not state.is_world_process_zero or ("loss" not in logs and not is_eval):
            return  # the end-of-training summary goes to status.json instead
        now = time.monotonic()
        step = state.global_step
        tokens = int(state.num_input_tokens_seen or 0)
        elapsed = now - self._t0
        done = step - self._step0
        eta = (state.max_steps - step) * elapsed / done if done > 0 else None
        dt = now - self._last_t
        # A trainer whose batches have no input_ids, and no count of its own, counts nothing:
        # unknown, not 0.
        counted = tokens > 0 or step == 0
        line: dict[str, Any] = {
            "event": "eval" if is_eval else "train",
            "step": step,
            "total_steps": state.max_steps,
            "epoch": state.epoch,
            "loss": _num(logs.get("loss")),
            "grad_norm": _num(logs.get("grad_norm")),
            "learning_rate": _num(logs.get("learning_rate")),
            "tokens_seen": tokens if counted else None,
            "tokens_per_s": (
                (tokens - self._last_tokens) / dt if dt > 0 and counted and not is_eval else None
            ),
            "elapsed_s": round(elapsed, 3),
            "eta_s": round(eta, 1) if eta is not None else None,
            "gpu_mem_peak_bytes": _gpu_peak_bytes(),
        }
        if memory is not None:
            line["memory"] = memory
        line.update({k: _num(v) for k, v in logs.items() if k.startswith("eval_")})
        extra = {
            k: _num(v)
            for k, v in logs.items()
            if k not in _STANDARD and not k.startswith("eval_") and isinstance(v, (int, float))
        }
        if extra:
            line["extra"] = extra
        if not is_eval:
            self._last_t, self._last_tokens = now, tokens
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, allow_nan=False) + "\n")
            fh.flush()
        self.status.update(step=step, total_steps=state.max_steps, loss=line["loss"])

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        memory = gather_peaks(args.process_index, args.local_process_index)  # every rank
        summary = {k: v for k, v in (state.log_history[-1] if state.log_history else {}).items()}
        self.status.update(
            step=state.global_step,
            total_steps=state.max_steps,
            train_runtime_s=summary.get("train_runtime"),
            train_loss=_num(summary.get("train_loss")),
            memory=memory,
        )


class NanGuard(TrainerCallback):
    """Stops training on a NaN/inf logged loss (the mean over a logging window is NaN as
    soon as one step's loss is). Needs logging_nan_inf_filter=False, which the recipes set,
    otherwise the Trainer hides NaN steps from the logged mean."""

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        loss = (logs or {}).get("loss")
        if isinstance(loss, (int, float)) and not math.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss} at step {state.global_step}: stopping "
                "(training.nan_policy: stop). Lower training.learning_rate, check the data, "
                "or set training.nan_policy: ignore to keep going"
            )


def _num(value: Any) -> float | int | None:
    """JSON-safe number: NaN/inf become null (the event is in status.json's error)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _gpu_peak_bytes() -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.max_memory_allocated())
