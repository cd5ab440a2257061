"""Check a recipe's data before any model is loaded: files exist, columns fit the task.

Reads only what it needs (column names, a few rows, a row count) with the standard library;
parquet and saved HF datasets folders use pyarrow, imported when such a file is checked.
No torch, no datasets: the launcher can run this on the head node in milliseconds, and
`python -m recipes.run` runs it before the expensive imports.
"""

from __future__ import annotations

import csv
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import UserInputError
from recipes.schema.rules import TASK_FORMATS

if TYPE_CHECKING:
    from recipes.schema import DataSection, Recipe

#: Columns (roles) each data format needs, and those it may have.
FORMAT_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "text": (("text",), ()),
    "messages": (("messages",), ()),
    "prompt/completion": (("prompt", "completion"), ()),
    "prompt/chosen/rejected": (("chosen", "rejected"), ("prompt",)),
    "prompt/completion/label": (("prompt", "completion", "label"), ()),
    "prompt": (("prompt",), ()),
}
SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}
SAMPLE_ROWS = 50


class DataError(UserInputError):
    """Data that cannot train this recipe; the message names the file and what is wrong."""


@dataclass(frozen=True)
class DataFileInfo:
    path: str
    file_format: str
    columns: tuple[str, ...]
    rows: int | None
    sample: tuple[dict[str, Any], ...] = field(repr=False, default=())


@dataclass(frozen=True)
class DataReport:
    """What the run needs to know about the data, found without loading a model."""

    format: str
    roles: dict[str, str]  # role -> column name in the files
    train: tuple[DataFileInfo, ...]
    eval: tuple[DataFileInfo, ...]

    @property
    def train_rows(self) -> int | None:
        counts = [f.rows for f in self.train]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)

    def summary(self) -> str:
        files = ", ".join(f"{f.path} ({f.file_format}, {f.rows} rows)" for f in self.train)
        roles = ", ".join(f"{r}={c}" if r != c else r for r, c in self.roles.items())
        return f"data: format {self.format} [{roles}] from {files}"


def _file_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    if path.is_dir():
        return "hf-disk"
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the file format from {path.suffix or 'no suffix'!r}: use "
            ".jsonl, .json, .parquet, .csv, a saved HF datasets folder, or set data.file_format"
        )
    return fmt


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    sample: list[dict[str, Any]] = []
    rows = 0
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rows += 1
            if len(sample) < SAMPLE_ROWS:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {lineno}: not JSON ({exc.msg})") from None
                if not isinstance(item, dict):
                    raise DataError(f"{path} line {lineno}: each line must be a JSON object")
                sample.append(item)
    return sample, rows


def _read_json(path: Path) -> tuple[list[dict[str, Any]], int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return _read_jsonl(path)  # many ".json" files are JSON lines; HF reads both
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()) and data:
        n = len(next(iter(data.values())))
        rows = [{k: v[i] for k, v in data.items()} for i in range(min(n, SAMPLE_ROWS))]
        return rows, n
    if isinstance(data, list) and all(isinstance(x, dict) for x in data[:SAMPLE_ROWS]):
        return list(data[:SAMPLE_ROWS]), len(data)
    raise DataError(f"{path}: expected a list of objects, or an object of equal-length lists")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]], int]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        sample: list[dict[str, Any]] = []
        rows = 0
        for row in reader:
            rows += 1
            if len(sample) < SAMPLE_ROWS:
                sample.append(dict(row))
    return columns, sample, rows


def _read_parquet(path: Path) -> tuple[list[str], list[dict[str, Any]], int]:
    pq: Any = importlib.import_module("pyarrow.parquet")  # untyped; imported only for parquet
    pf = pq.ParquetFile(path)
    columns = list(pf.schema_arrow.names)
    sample: list[dict[str, Any]] = []
    for batch in pf.iter_batches(batch_size=SAMPLE_ROWS):
        sample = batch.to_pylist()
        break
    return columns, sample, int(pf.metadata.num_rows)


def _read_hf_disk(path: Path, split: str) -> tuple[list[str], list[dict[str, Any]], int | None]:
    """A folder written by Dataset.save_to_disk / DatasetDict.save_to_disk."""
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get(
            "splits", []
        )
        if split not in splits:
            raise DataError(
                f"{path}: no split {split!r} (splits: {', '.join(splits)}); set data.split"
            )
        path = path / split
    info_file = path / "dataset_info.json"
    state_file = path / "state.json"
    if not info_file.is_file() or not state_file.is_file():
        raise DataError(
            f"{path}: not a saved HF datasets folder (no dataset_info.json/state.json); "
            "give the data file itself, or a folder written by save_to_disk()"
        )
    info = json.loads(info_file.read_text(encoding="utf-8"))
    columns = list((info.get("features") or {}).keys())
    state = json.loads(state_file.read_text(encoding="utf-8"))
    sample: list[dict[str, Any]] = []
    rows: int | None = None
    files = [path / f["filename"] for f in state.get("_data_files", [])]
    if files:
        pa: Any = importlib.import_module("pyarrow")
        total = 0
        for arrow_file in files:
            with pa.memory_map(str(arrow_file)) as source:
                table = pa.ipc.open_stream(source).read_all()
            total += table.num_rows
            if not sample:
                sample = table.slice(0, SAMPLE_ROWS).to_pylist()
        rows = total
    return columns, sample, rows


def read_file_info(path_text: str, data: DataSection, key: str) -> DataFileInfo:
    """Columns, sample rows and row count of one data file; DataError names `key` and path."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise DataError(f"{key}: {path_text!r}: no such file or folder (in {Path.cwd()})")
    fmt = _file_format(path, data.file_format)
    try:
        if fmt in ("jsonl", "json"):
            sample, rows = _read_jsonl(path) if fmt == "jsonl" else _read_json(path)
            columns = list(dict.fromkeys(k for row in sample for k in row))
            count: int | None = rows
        elif fmt == "csv":
            columns, sample, count = _read_csv(path)
        elif fmt == "parquet":
            columns, sample, count = _read_parquet(path)
        else:
            columns, sample, count = _read_hf_disk(path, data.split)
    except DataError as exc:
        raise DataError(f"{key}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: {path_text!r}: cannot read ({exc})") from None
    if count == 0:
        raise DataError(f"{key}: {path_text!r} has no rows")
    return DataFileInfo(str(path), fmt, tuple(columns), count, tuple(sample))


def _roles_present(columns: tuple[str, ...], mapping: dict[str, str]) -> dict[str, str]:
    present: dict[str, str] = {}
    for role in ("text", "messages", "prompt", "completion", "chosen", "rejected", "label"):
        column = mapping.get(role, role)
        if column in columns:
            present[role] = column
    return present


def _needs(fmt: str, mapping: dict[str, str]) -> str:
    required, optional = FORMAT_ROLES[fmt]
    text = ", ".join(mapping.get(r, r) for r in required)
    if optional:
        text += " (and optionally " + ", ".join(mapping.get(r, r) for r in optional) + ")"
    return text


def resolve_format(
    task: str, declared: str, info: DataFileInfo, mapping: dict[str, str], key: str
) -> str:
    """The data format for this task, from data.format or (auto) from the columns found."""
    present = _roles_present(info.columns, mapping)
    candidates = TASK_FORMATS[task] if declared == "auto" else (declared,)
    for fmt in candidates:
        required, _ = FORMAT_ROLES[fmt]
        if all(role in present for role in required):
            return fmt
    found = ", ".join(info.columns) or "none"
    needed = "; or ".join(f"{_needs(fmt, mapping)} (format {fmt})" for fmt in candidates)
    hint = " (map your column names with data.columns, e.g. {prompt: question})"
    raise DataError(
        f"{key}: {info.path}: columns found: {found}; task {task} needs columns {needed}{hint}"
    )


def _check_values(fmt: str, info: DataFileInfo, roles: dict[str, str], key: str) -> None:
    """Type checks on the sampled rows: wrong types fail here, not an hour into tokenizing."""
    required, optional = FORMAT_ROLES[fmt]
    for i, row in enumerate(info.sample):
        where = f"{key}: {info.path} row {i + 1}"
        for role in (*required, *optional):
            if role not in roles:
                continue
            value = row.get(roles[role])
            column = roles[role]
            if role == "label":
                if not isinstance(value, bool) and str(value).lower() not in (
                    "true",
                    "false",
                    "0",
                    "1",
                ):
                    raise DataError(f"{where}: column {column!r} must be true/false, got {value!r}")
            elif role == "messages":
                ok = isinstance(value, list) and all(
                    isinstance(m, dict) and "role" in m and "content" in m for m in value
                )
                if not ok:
                    raise DataError(
                        f"{where}: column {column!r} must be a list of {{role, content}}, "
                        f"got {type(value).__name__}"
                    )
            elif not isinstance(value, (str, list)) or value in ("", []):
                raise DataError(
                    f"{where}: column {column!r} must be a non-empty string (or a list of "
                    f"messages), got {value!r}"
                )


def check_data(recipe: Recipe) -> DataReport:
    """Everything about the data that can fail, checked before a model is loaded."""
    data, task = recipe.data, recipe.task.kind
    train_paths = data.train_paths()
    if not train_paths:
        raise DataError(
            "data.train is not set: give a .jsonl/.json/.parquet/.csv file or a saved HF "
            "datasets folder (python -m recipes.train.toy_data data/tiny writes a toy one)"
        )
    train = tuple(read_file_info(p, data, "data.train") for p in train_paths)
    fmt = resolve_format(task, data.format, train[0], data.columns, "data.train")
    roles = _roles_present(train[0].columns, data.columns)
    needed = set(FORMAT_ROLES[fmt][0]) | (set(FORMAT_ROLES[fmt][1]) & set(roles))
    roles = {r: c for r, c in roles.items() if r in needed}
    for info in train:
        resolve_format(task, fmt, info, data.columns, "data.train")
        _check_values(fmt, info, roles, "data.train")
    evals = tuple(read_file_info(p, data, "data.eval") for p in data.eval_paths())
    for info in evals:
        resolve_format(task, fmt, info, data.columns, "data.eval")
        _check_values(fmt, info, roles, "data.eval")
    report = DataReport(fmt, roles, train, evals)
    rows = report.train_rows
    if data.max_samples is not None and rows is not None:
        rows = min(rows, data.max_samples)
    if isinstance(data.eval_split, int) and rows is not None and data.eval_split >= rows:
        raise DataError(f"data.eval_split {data.eval_split} holds out every one of the {rows} rows")
    return report
