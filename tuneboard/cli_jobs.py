"""`tuneboard jobs / status / logs / stop / resume`: jobs from their directories.

Everything reads `$XDG_STATE_HOME/tuneboard/jobs/<id>/` (launcher/job/store.py), which the job's
supervisor keeps current; `stop` signals that supervisor, or stops the job on its nodes
directly when the supervisor is gone. A job is named by its id, a unique prefix of it,
or `latest`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from launcher.errors import LauncherError
from launcher.job.control import live_status, resume_request, stop_job
from launcher.job.store import JobDir, find_job, list_job_dirs, supervisor_alive
from planner.errors import UserInputError
from tuneboard.cli_launch import EXIT_FAILED, run_launch
from tuneboard.output import console, emit, error_console
from tuneboard.render_launch import job_summary, render_jobs, render_status

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (a stable schema).")]
JobArg = Annotated[str, typer.Argument(help="Job id, a unique prefix of it, or `latest`.")]


def register(app: typer.Typer) -> None:
    app.command(name="jobs", help="List the jobs launched from this machine.")(jobs)
    app.command(name="status", help="One job: status, nodes, progress, root cause.")(status)
    app.command(name="logs", help="A job's log (every node, or one); -f follows it.")(logs)
    app.command(name="stop", help="Stop a job on every node (its processes only).")(stop)
    app.command(name="resume", help="Launch a job again from its latest checkpoint.")(resume)


def jobs(as_json: JsonFlag = False) -> None:
    rows = []
    for job in list_job_dirs():
        state = job.read_state()
        rows.append((state, live_status(state), supervisor_alive(state)))
    emit(
        [job_summary(state, shown, alive) for state, shown, alive in rows],
        as_json,
        lambda c: (
            render_jobs(c, [(state, shown) for state, shown, _ in rows])
            if rows
            else c.print("no jobs yet: `tuneboard launch recipe.yaml`")
        ),
    )


def status(job: JobArg, as_json: JsonFlag = False) -> None:
    found = find_job(job)
    state = found.read_state()
    alive = supervisor_alive(state)
    data: dict[str, Any] = {
        **dataclasses.asdict(state),
        "status_shown": live_status(state),
        "supervisor_alive": alive,
        "job_dir": str(found.path),
    }
    emit(data, as_json, lambda c: render_status(c, state, live_status(state), str(found.path)))


def logs(
    job: JobArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as it grows.")
    ] = False,
    node: Annotated[str | None, typer.Option("--node", help="Only this node's lines.")] = None,
) -> None:
    found = find_job(job)
    state = found.read_state()
    if node is not None:
        names = [n.name for n in state.nodes]
        if node not in names:
            raise UserInputError(f"--node {node!r}: job {state.id} runs on {', '.join(names)}")
        path = found.node_log(node)
    else:
        path = found.combined_log
    _print_file(path, follow, found)


def _print_file(path: Path, follow: bool, job: JobDir) -> None:
    offset = 0
    out = sys.stdout
    while True:
        ended = not follow or _ended(job)  # read before the file: nothing written after is lost
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            if data:
                offset += len(data)
                out.write(data.decode("utf-8", errors="replace"))
                out.flush()
        if ended:
            return
        time.sleep(0.25)


def _ended(job: JobDir) -> bool:
    state = job.read_state()
    return state.final or not supervisor_alive(state)


def stop(
    job: JobArg,
    grace: Annotated[
        float | None, typer.Option("--grace", help="Seconds between TERM and KILL.")
    ] = None,
) -> None:
    found = find_job(job)
    try:
        outcome = stop_job(found, grace_s=grace)
    except UserInputError:
        raise
    except LauncherError as err:
        raise _exit(str(err), EXIT_FAILED) from None
    state = outcome.state
    out = console()
    if outcome.how == "already":
        out.print(f"job {state.id} had already ended: {state.status}", markup=False)
        return
    out.print(Text(f"job {state.id} {state.status}", style="bold"), soft_wrap=True)
    for name, killed in outcome.killed:
        if killed:
            out.print(f"  {name}: KILLed after the grace period: {list(killed)}", markup=False)


def resume(
    job: JobArg,
    detach: Annotated[bool, typer.Option("--detach", help="Return once it has started.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Preflight and print only.")] = False,
) -> None:
    found = find_job(job)
    state = found.read_state()
    if not state.final:
        raise UserInputError(
            f"job {state.id} is {state.status}: stop it first (`tuneboard stop {state.id}`)"
        )
    request = resume_request(found, state, None)
    raise typer.Exit(run_launch(request, dry_run=dry_run, detach=detach))


def _exit(message: str, code: int) -> typer.Exit:
    """Print the one-line error; the caller raises the returned Exit."""
    error_console().print(Text(f"error: {message}"), soft_wrap=True)
    return typer.Exit(code)
