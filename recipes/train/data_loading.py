"""Load the checked data (recipes/train/data_check.py) as HF datasets in the shape TRL expects.

Columns are renamed to their roles (text, messages, prompt, completion, chosen, rejected,
label); only those columns are kept, except for grpo, whose reward functions receive the
other columns (an `answer`, say) as keyword arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recipes.train.data_check import DataReport

if TYPE_CHECKING:
    from recipes.schema import Recipe

LOADERS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}


def _load(files: list[Any], split: str) -> Any:
    from datasets import concatenate_datasets, load_dataset, load_from_disk

    parts = []
    by_format: dict[str, list[str]] = {}
    for info in files:
        if info.file_format == "hf-disk":
            loaded = load_from_disk(info.path)
            parts.append(loaded[split] if hasattr(loaded, "keys") else loaded)
        else:
            by_format.setdefault(LOADERS[info.file_format], []).append(info.path)
    for loader, paths in by_format.items():
        parts.append(load_dataset(loader, data_files=paths, split="train"))
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _to_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1")


def _shape(dataset: Any, recipe: Recipe, report: DataReport) -> Any:
    renames = {col: role for role, col in report.roles.items() if col != role}
    if renames:
        dataset = dataset.rename_columns(renames)
    if recipe.task.kind != "grpo":
        dataset = dataset.select_columns(list(report.roles))
    if "label" in report.roles:
        from datasets import Value

        dataset = dataset.map(lambda row: {"label": _to_bool(row["label"])})
        dataset = dataset.cast_column("label", Value("bool"))
    return dataset


def load_datasets(recipe: Recipe, report: DataReport) -> tuple[Any, Any]:
    """(train, eval or None), renamed to roles, capped at data.max_samples, eval split off."""
    data = recipe.data
    train = _shape(_load(list(report.train), data.split), recipe, report)
    if data.max_samples is not None and len(train) > data.max_samples:
        train = train.select(range(data.max_samples))
    evaluation = None
    if report.eval:
        evaluation = _shape(_load(list(report.eval), data.split), recipe, report)
    elif data.eval_split is not None:
        parts = train.train_test_split(test_size=data.eval_split, seed=recipe.training.seed)
        train, evaluation = parts["train"], parts["test"]
    return train, evaluation
