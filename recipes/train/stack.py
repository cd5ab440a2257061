"""Is the training stack installed here? Asked before anything heavy is imported, so that a
machine without it (a laptop that plans and launches, a node set up with `pip install .`)
gets one line naming what is missing and how to install it, not a ModuleNotFoundError
traceback from the middle of a training script. Standard library only."""

from __future__ import annotations

import importlib.util
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
