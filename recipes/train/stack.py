"""Is the training stack installed here? Asked before anything heavy is imported, so that a
machine without it (a laptop that plans and launches, a node set up with `pip install .`)
gets one line naming what is missing and how to install it, not a ModuleNotFoundError
traceback from the middle of a training script. Standard library only."""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recipes.schema import Recipe

#: What every family imports (the `train` extra of pyproject.toml, import names).
CORE = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")
#: Every package of the stack, for telling a missing-stack import apart from another.
STACK = frozenset((*CORE, "deepspeed", "bitsandbytes"))

INSTALL_HINT = (
    "install torch for your CUDA first (https://pytorch.org/get-started), "
    "then: pip install 'tuneboard[train]'"
)


def needed(recipe: Recipe) -> tuple[str, ...]:
    """The packages this recipe's run imports."""
    extra: list[str] = []
    if recipe.distributed.uses_deepspeed:
        extra.append("deepspeed")
    if recipe.method.kind == "qlora" or "8bit" in recipe.training.optimizer:
        extra.append("bitsandbytes")
    return (*CORE, *extra)


def is_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or half-removed package
        return False


def missing(recipe: Recipe) -> list[str]:
    return [name for name in needed(recipe) if not is_installed(name)]


def missing_message(names: list[str]) -> str:
    """One line: what is missing and the command that installs it."""
    return f"the training stack is not installed here (missing: {', '.join(names)}): {INSTALL_HINT}"


def import_failure_message(exc: ModuleNotFoundError) -> str | None:
    """The line for an import of the stack that failed while training started (a package
    removed since, or one too old to have a module), or None for any other import."""
    name = exc.name or ""
    root = name.split(".")[0]
    if root not in STACK:
        return None
    if name == root:
        return missing_message([root])
    return f"the training stack here is incomplete or too old ({name} is missing): {INSTALL_HINT}"


#: bitsandbytes (imported by peft whenever it is installed, so by every run, LoRA and full
#: included) tries at import, on a CPU with AVX512-BF16, to fetch a fused 4-bit CPU kernel
#: from the Hub through `kernels`, and logs this when it cannot (untrusted publisher,
#: offline). It then uses its own CPU path: nothing to act on, one line of noise per rank.
BNB_CPU_KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_CPU_KERNEL_WARNING = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_known_noise() -> None:
    """Drop the warnings above (and only them); call before the stack is imported."""
    logger = logging.getLogger(BNB_CPU_KERNEL_LOGGER)
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage(BNB_CPU_KERNEL_WARNING))
