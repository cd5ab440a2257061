"""Run a recipe: `python -m recipes.run recipe.yaml [section.key=value ...] [--check]`.

`--check-data` checks only the recipe and its data (files present, readable, in the format
they claim, the sampled rows fit the task), with no other check of this machine: the
launcher's preflight runs it where the data is (`-` reads the recipe from stdin).

Order matters and is the point of this file:
1. validate the recipe (no heavy import: errors in milliseconds, exit code 2);
2. check the data (files exist, columns fit the task) — still before torch is imported;
3. dispatch to the family's top-down script, which loads the model and trains.

torchrun starts this on every rank. Exit codes: 0 done, 2 bad recipe or data or no
training stack here (torch, transformers, peft, trl, ...; `--check` needs none of it), with
status.json saying why, 1 a failure while training (status.json has the error, stderr the
traceback).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from recipes.schema import (
    Recipe,
    RecipeError,
    apply_overrides,
    dump_recipe,
    load_recipe,
    parse_recipe,
    recipe_mapping_from_text,
)
from recipes.train import stack
from recipes.train.data_check import DataError, check_data
from recipes.train.runtime import StatusFile

#: task.kind -> the module whose main(recipe, report, status) trains it.
FAMILIES = {
    "sft": "recipes.train.sft",
    "pretrain": "recipes.train.sft",
    "dpo": "recipes.train.preference",
    "kto": "recipes.train.preference",
    "orpo": "recipes.train.preference",
    "simpo": "recipes.train.preference",
    "reward": "recipes.train.reward_model",
    "grpo": "recipes.train.grpo",
}


def _is_main_rank() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.run", description=__doc__)
    parser.add_argument("recipe", type=Path, help="recipe YAML file (-: read it from stdin)")
    parser.add_argument("overrides", nargs="*", help="section.key=value (value parsed as YAML)")
    parser.add_argument(
        "--check", action="store_true", help="validate the recipe and the data, then stop"
    )
    parser.add_argument(
        "--check-data",
        action="store_true",
        help="validate the recipe and its data only (what the launcher's preflight runs)",
    )
    args = parser.parse_intermixed_args(argv)

    try:
        recipe = _load(args.recipe, list(args.overrides))
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check_data:
        return _check_data_only(recipe)
    output_dir = Path(recipe.output.dir)
    status = StatusFile(output_dir, enabled=_is_main_rank() and not args.check)
    status.update("loading", error=None, recipe=str(args.recipe), task=recipe.task.kind)
    try:
        report = check_data(recipe)
        resume = recipe.training.resume
        if resume not in ("auto", "none") and not Path(resume).expanduser().is_dir():
            raise DataError(f"training.resume: {resume!r}: no such checkpoint folder")
        if recipe.training.fused_ce and importlib.util.find_spec("liger_kernel") is None:
            raise DataError("training.fused_ce uses Liger kernels: pip install liger-kernel")
    except DataError as exc:
        status.update("failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"recipe ok: {args.recipe} ({recipe.task.kind}, {recipe.method.kind})")
        print(report.summary())
        return 0

    missing = stack.missing(recipe)
    if missing:
        return _stack_missing(status, stack.missing_message(missing))

    if _is_main_rank():
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "recipe.yaml").write_text(
            dump_recipe(recipe, f"# as run from {args.recipe}, aliases resolved\n"),
            encoding="utf-8",
        )
    clean = False
    stack.quiet_known_noise()
    try:
        family = importlib.import_module(FAMILIES[recipe.task.kind])
        family.main(recipe, report, status)
        clean = True
    except KeyboardInterrupt:
        status.update("failed", error="interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - any failure must reach status.json, then exit 1
        if isinstance(exc, ModuleNotFoundError):
            message = stack.import_failure_message(exc)
            if message is not None:  # the stack, not the recipe: how to install it
                return _stack_missing(status, message)
        status.update("failed", error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1
    finally:
        if "torch" in sys.modules:
            from recipes.train.runtime import shutdown_distributed

            shutdown_distributed(clean)
    return 0


def _load(path: Path, overrides: list[str]) -> Recipe:
    if str(path) != "-":
        return load_recipe(path, overrides)
    data = recipe_mapping_from_text(sys.stdin.read(), "stdin")
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_recipe(data, "stdin")


def _check_data_only(recipe: Recipe) -> int:
    try:
        report = check_data(recipe)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def _stack_missing(status: StatusFile, message: str) -> int:
    status.update("failed", error=message)
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
