"""Data checks before the model loads, the toy data generator, and the GRPO reward built-ins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recipes.schema import Recipe, parse_recipe
from recipes.train import toy_data as tinydata
from recipes.train.data_check import DataError, check_data
from recipes.train.reward_functions import resolve


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tinydata.write(tmp_path_factory.mktemp("toy"), rows=20, seed=0)


def _recipe(task: str, train: Any, **data: Any) -> Recipe:
    task_section: dict[str, Any] = {"kind": task}
    if task == "grpo":
        task_section["grpo"] = {"rewards": ["format"]}
    return parse_recipe({"model": "m", "task": task_section, "data": {"train": train, **data}})


def _data_error(recipe: Recipe) -> str:
    with pytest.raises(DataError) as info:
        check_data(recipe)
    return str(info.value)


def test_formats_are_detected_per_task(toy: dict[str, Path]) -> None:
    cases = [
        ("sft", "prompt_completion", "prompt/completion"),
        ("sft", "messages", "messages"),
        ("pretrain", "text", "text"),
        ("dpo", "preference", "prompt/chosen/rejected"),
        ("kto", "kto", "prompt/completion/label"),
        ("kto", "preference", "prompt/chosen/rejected"),
        ("grpo", "prompts", "prompt"),
        ("sft", "prompt_completion_csv", "prompt/completion"),
    ]
    for task, name, expected in cases:
        report = check_data(_recipe(task, str(toy[name])))
        assert report.format == expected, (task, name)
        assert report.train_rows == 20


def test_missing_file_is_named() -> None:
    message = _data_error(_recipe("sft", "nowhere/train.jsonl"))
    assert (
        "data.train" in message and "nowhere/train.jsonl" in message and "no such file" in message
    )
    assert "data.train is not set" in _data_error(parse_recipe({"model": "m"}))


def test_columns_that_do_not_fit_the_task_name_found_and_needed(toy: dict[str, Path]) -> None:
    message = _data_error(_recipe("dpo", str(toy["prompt_completion"])))
    assert "columns found: prompt, completion" in message
    assert "chosen, rejected" in message and "dpo" in message
    message = _data_error(_recipe("pretrain", str(toy["messages"])))
    assert "columns found: messages" in message and "needs columns text" in message


def test_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    report = check_data(
        _recipe("sft", str(path), columns={"prompt": "question", "completion": "answer"})
    )
    assert report.format == "prompt/completion"
    assert report.roles == {"prompt": "question", "completion": "answer"}
    message = _data_error(_recipe("sft", str(path)))
    assert "question, answer" in message and "data.columns" in message


def test_bad_values_and_bad_files(tmp_path: Path) -> None:
    bad_messages = tmp_path / "m.jsonl"
    bad_messages.write_text(json.dumps({"messages": "hello"}) + "\n")
    assert "list of {role, content}" in _data_error(_recipe("sft", str(bad_messages)))
    not_json = tmp_path / "x.jsonl"
    not_json.write_text('{"text": "a"}\n{oops\n')
    assert "line 2" in _data_error(_recipe("pretrain", str(not_json)))
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert "no rows" in _data_error(_recipe("pretrain", str(empty)))
    odd = tmp_path / "data.txt"
    odd.write_text("hello")
    assert "file format" in _data_error(_recipe("pretrain", str(odd)))
    label = tmp_path / "k.jsonl"
    label.write_text(json.dumps({"prompt": "p", "completion": "c", "label": "maybe"}) + "\n")
    assert "true/false" in _data_error(_recipe("kto", str(label)))


def test_eval_split_count_must_leave_training_rows(toy: dict[str, Path]) -> None:
    message = _data_error(_recipe("sft", str(toy["prompt_completion"]), eval_split=20))
    assert "eval_split 20" in message


def test_parquet_and_saved_datasets_folder(tmp_path: Path, toy: dict[str, Path]) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    rows = [json.loads(line) for line in toy["preference"].read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pref.parquet")
    report = check_data(_recipe("dpo", str(tmp_path / "pref.parquet")))
    assert report.format == "prompt/chosen/rejected" and report.train_rows == 20
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(tmp_path / "dd")
    report = check_data(_recipe("orpo", str(tmp_path / "dd")))
    assert report.train[0].file_format == "hf-disk" and report.train_rows == 20
    assert "no split 'test'" in _data_error(_recipe("orpo", str(tmp_path / "dd"), split="test"))


def test_tinydata_is_deterministic_and_learnable() -> None:
    a = tinydata.make_rows(5, seed=3)
    assert a == tinydata.make_rows(5, seed=3) and a != tinydata.make_rows(5, seed=4)
    words = tinydata.WORDS
    for row in a["preference"]:
        prompt_words = row["prompt"].removeprefix("continue: ").split()
        nxt = words[(words.index(prompt_words[-1]) + 1) % len(words)]
        assert row["chosen"].split()[0] == nxt and row["chosen"] != row["rejected"]


def test_reward_builtins() -> None:
    assert resolve("format")(completions=["<think>x</think> <answer>4</answer>", "4"]) == [1.0, 0.0]
    assert resolve("length:4")(completions=["abcd", "ab", "abcdefghijkl"]) == [1.0, 0.5, 0.0]
    chat = [[{"role": "assistant", "content": "red blue"}]]
    assert resolve("regex:^red")(completions=chat) == [1.0]
    assert resolve("recipes.train.reward_functions:format_reward") is not None
    with pytest.raises(ValueError, match="cannot import"):
        resolve("no_such_module_x:f")
