"""Reward functions for GRPO: the built-ins, and `module:function` from the user.

task.grpo.rewards entries:
  format           1.0 when the completion is `<think>...</think><answer>...</answer>`, else 0
  length:N         1 - |len - N| / N, clipped to [0, 1] (len in characters)
  regex:PATTERN    1.0 when re.search(PATTERN, completion) matches, else 0
  pkg.mod:func     your function, TRL's signature: func(prompts, completions, **columns)
                   -> list[float]; the dataset's other columns arrive as keyword lists
Completions in chat form (a list of messages) are scored on the last message's content.
Standard library only.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

RewardFunc = Callable[..., list[float]]
FORMAT_PATTERN = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)


def _text(completion: Any) -> str:
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def _named(func: RewardFunc, name: str) -> RewardFunc:
    func.__name__ = name  # TRL logs each reward under its function's name
    return func


def format_reward() -> RewardFunc:
    def reward(completions: list[Any], **_: Any) -> list[float]:
        return [1.0 if FORMAT_PATTERN.match(_text(c)) else 0.0 for c in completions]

    return _named(reward, "format")


def length_reward(target: int) -> RewardFunc:
    def reward(completions: list[Any], **_: Any) -> list[float]:
        return [max(0.0, 1.0 - abs(len(_text(c)) - target) / target) for c in completions]

    return _named(reward, f"length_{target}")


def regex_reward(pattern: str) -> RewardFunc:
    compiled = re.compile(pattern)

    def reward(completions: list[Any], **_: Any) -> list[float]:
        return [1.0 if compiled.search(_text(c)) else 0.0 for c in completions]

    return _named(reward, "regex")


def resolve(spec: str) -> RewardFunc:
    """One task.grpo.rewards entry -> a callable TRL can use."""
    head, _, arg = spec.partition(":")
    if spec == "format":
        return format_reward()
    if head == "length":
        return length_reward(int(arg))
    if head == "regex":
        return regex_reward(arg)
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"task.grpo.rewards {spec!r}: cannot import {module_name!r} ({exc})"
        ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"task.grpo.rewards {spec!r}: {module_name} has no function {func_name!r}")
    return func  # type: ignore[no-any-return]
