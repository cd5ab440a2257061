"""The launch and jobs commands in a typer app of their own, as tuneboard/cli.py will hold
them: `python -m tests.launch_app launch recipe.yaml ...` runs a command as a user would."""

from __future__ import annotations

import typer

from tuneboard import cli_jobs, cli_launch

app = typer.Typer(name="tuneboard", pretty_exceptions_enable=False, add_completion=False)
cli_launch.register(app)
cli_jobs.register(app)


@app.callback()
def _root() -> None:
    """Plan, launch and watch LLM fine-tuning (launch and jobs commands only)."""


if __name__ == "__main__":
    app(prog_name="tuneboard")
