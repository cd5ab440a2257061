"""`tuneboard`: plan, launch and watch LLM fine-tuning from a terminal.

Each noun lives in its own module (cli_plan, ...); this one builds the typer app
and turns user errors into one clean line with exit code 2.
"""

from __future__ import annotations

import sys

import typer

from planner.errors import UserInputError
from tuneboard.cli_hints import MISSING_HINTS

app = typer.Typer(
    name="tuneboard",
    help=(
        "Plan, launch and watch LLM fine-tuning on a small GPU cluster.\n\n"
        "  tuneboard plan --model 30b --gpus 24xA800     will it fit, and how to run it\n\n"
        "  tuneboard launch recipe.yaml                   run it on every node\n\n"
        "  tuneboard dashboard [JOB]                      watch GPUs, loss and logs\n\n"
        "  tuneboard models / tuneboard gpus              what the planner knows"
    ),
    no_args_is_help=False,
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _bare(ctx: typer.Context) -> None:
    """Bare `tuneboard` in a terminal opens the dashboard on this machine (and the
    latest job launched from here, if any); piped, it prints the help."""
    if ctx.invoked_subcommand is not None:
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        sys.stdout.write(ctx.get_help() + "\n")
        return
    from tuneboard.cli_dashboard import dashboard, latest_job_or_none

    dashboard(job=latest_job_or_none())


#: Which module defines each command. Only the module of the command being run is
#: imported, so `tuneboard plan` does not pay for the launcher's or the dashboard's imports.
_COMMAND_MODULES: dict[str, str] = {
    "plan": "cli_plan",
    "launch": "cli_launch",
    "jobs": "cli_jobs",
    "status": "cli_jobs",
    "logs": "cli_jobs",
    "stop": "cli_jobs",
    "resume": "cli_jobs",
    "dashboard": "cli_dashboard",
    "agent": "cli_dashboard",
    "models": "cli_catalog",
    "gpus": "cli_catalog",
}
_ORDER = ("cli_plan", "cli_launch", "cli_jobs", "cli_dashboard", "cli_catalog")


def _register(argv: list[str]) -> None:
    import importlib

    command = next((a for a in argv if not a.startswith("-")), None)
    wanted = _COMMAND_MODULES.get(command or "")
    for name in _ORDER if wanted is None else (wanted,):
        module = importlib.import_module(f"tuneboard.{name}")
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    try:  # typer >= 0.20 vendors click as typer._click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as click_exc  # type: ignore[no-redef]

    args = sys.argv[1:] if argv is None else argv
    _register(args)
    try:
        code = app(args=args, standalone_mode=False, prog_name="tuneboard")
    except UserInputError as exc:  # every layer's bad-input error: one line, exit 2
        _fail(str(exc))
    except click_exc.NoArgsIsHelpError as exc:
        # `tuneboard plan` with no arguments: show its help, like --help. Rich help is
        # printed while the error is made (its message is then empty); plain help is
        # the message.
        if exc.message:
            sys.stdout.write(exc.message + "\n")
        sys.exit(0)
    except click_exc.MissingParameter as exc:
        _fail(_missing_parameter_message(exc))
    except click_exc.BadParameter as exc:
        _fail(_bad_parameter_message(exc, sys.argv[1:] if argv is None else argv))
    except click_exc.ClickException as exc:
        _fail(exc.format_message())
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _missing_parameter_message(exc: Exception) -> str:
    """`missing JOB: give a job id ...` / `--model/-m is required: a catalog name ...`."""
    param = getattr(exc, "param", None)
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "tuneboard"
    name = str(getattr(param, "name", "") or "")
    hint = MISSING_HINTS.get(name) or str(getattr(param, "help", "") or "").rstrip(".")
    hint = hint or f"see {command} --help"
    opts: list[str] = list(getattr(param, "opts", []) or [])
    if getattr(param, "param_type_name", "") == "option" and opts:
        return f"{'/'.join(opts)} is required: {hint}"
    return f"missing {(name or 'argument').upper()}: {hint}"


def _bad_parameter_message(exc: Exception, argv: list[str]) -> str:
    """`--seq-len 'abc': expected an integer` — name the option and the value given."""
    param = getattr(exc, "param", None)
    opts: list[str] = list(getattr(param, "opts", []) or [])
    message = str(getattr(exc, "message", exc))
    if "valid integer" in message:
        message = "expected an integer"
    for i, token in enumerate(argv):
        for opt in opts:
            if token == opt and i + 1 < len(argv):
                return f"{opt} {argv[i + 1]!r}: {message}"
            if token.startswith(opt + "="):
                return f"{opt} {token.split('=', 1)[1]!r}: {message}"
    return f"{'/'.join(opts) or 'argument'}: {message}"


def _fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


if __name__ == "__main__":
    main()
