"""`tuneboard`: plan, launch and watch LLM fine-tuning from a terminal.

Each noun lives in its own module (cli_plan, ...); this one builds the typer app
and turns user errors into one clean line with exit code 2.
"""

from __future__ import annotations

import sys

import typer

from planner.errors import PlannerInputError

app = typer.Typer(
    name="tuneboard",
    help=(
        "Plan, launch and watch LLM fine-tuning on a small GPU cluster.\n\n"
        "  tuneboard plan --model 30b --gpus 24xA800     will it fit, and how to run it\n\n"
        "  tuneboard models / tuneboard gpus              what the planner knows"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    from tuneboard import cli_catalog, cli_plan

    cli_plan.register(app)
    cli_catalog.register(app)


class UserError(Exception):
    """Bad input found by the CLI layer itself; printed as one line, exit code 2."""


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except (PlannerInputError, UserError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


def _fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


if __name__ == "__main__":
    main()
