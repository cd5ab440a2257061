"""`tuneboard ARGS` in this process, through the real entry point (tuneboard.cli.main), so
that what a test sees is what a user sees: the one-line `error: ...` and exit code 2 of
every bad input come from the same place as on the command line."""

from __future__ import annotations

import typer
from typer.testing import CliRunner, Result

from tuneboard.cli import main

_entry = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@_entry.command(
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],
    }
)
def _tuneboard(ctx: typer.Context) -> None:
    main(list(ctx.args))


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    """Run `tuneboard *args`; stdout and stderr apart, exit code as the shell sees it."""
    return CliRunner().invoke(_entry, args, env=env)
