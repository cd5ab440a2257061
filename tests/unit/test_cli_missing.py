"""A required argument or option left out: one line that says what is missing and what to
give (never `error: job: ` with nothing after it), exit 2; no arguments at all: the help,
once."""

from __future__ import annotations

from typing import Annotated

import pytest
import typer

from tests.support.cli_runner import invoke
from tuneboard.cli import _missing_parameter_message

JOB_HINT = "give a job id, a unique prefix of it, or 'latest' (see tuneboard jobs)"


@pytest.mark.parametrize("command", ["status", "logs", "stop", "resume"])
def test_a_missing_job_says_what_to_give(command: str) -> None:
    result = invoke([command])
    assert result.exit_code == 2
    assert result.stderr == f"error: missing JOB: {JOB_HINT}\n"


def test_a_missing_model_names_every_accepted_form() -> None:
    result = invoke(["plan", "--gpus", "24xA800"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --model/-m is required: a catalog name (tuneboard models), a config.json "
        "or its folder, an HF id, or a size like 7b\n"
    )


def test_a_missing_recipe_points_at_the_examples() -> None:
    result = invoke(["launch", "--dry-run"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: missing RECIPE: give a recipe YAML file")
    assert "recipes/configs/" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["plan", "launch"])
def test_no_arguments_prints_the_help_once(command: str) -> None:
    result = invoke([command])
    assert result.exit_code == 0
    assert result.stdout.count("Usage:") == 1, result.stdout


def _missing_of(command: typer.Typer, args: list[str]) -> Exception:
    try:  # typer >= 0.20 vendors click as typer._click
        from typer._click.exceptions import MissingParameter
    except ImportError:  # pragma: no cover - older typer
        from click.exceptions import MissingParameter  # type: ignore[no-redef]

    with pytest.raises(MissingParameter) as caught:
        typer.main.get_command(command).main(args, prog_name="tool", standalone_mode=False)
    return caught.value


def test_a_parameter_without_a_hint_is_described_by_its_help() -> None:
    tool = typer.Typer()

    @tool.command()
    def run(
        where: Annotated[str, typer.Argument(help="The node to run on.")],
        tag: Annotated[str, typer.Option("--tag", help="A label for the run.")],
    ) -> None:
        del where, tag

    assert _missing_parameter_message(_missing_of(tool, [])) == "missing WHERE: The node to run on"
    assert _missing_parameter_message(_missing_of(tool, ["n1"])) == (
        "--tag is required: A label for the run"
    )


def test_a_parameter_without_hint_or_help_points_at_help() -> None:
    tool = typer.Typer()

    @tool.command()
    def run(where: str) -> None:
        del where

    assert _missing_parameter_message(_missing_of(tool, [])) == ("missing WHERE: see tool --help")
