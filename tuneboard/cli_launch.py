"""`tuneboard launch recipe.yaml`: preflight every node, run torchrun on each, stop on failure.

Exit codes: 0 the job succeeded (or --detach started it, or --dry-run passed preflight);
1 the job failed; 2 bad input (nothing started); 3 preflight or the fit check refused
(nothing started); 130 stopped (Ctrl-C or `tuneboard stop`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from launcher.errors import LauncherError
from launcher.job.launch import (
    LaunchRequest,
    check,
    connect,
    create_job,
    plan_job,
    prepare,
    previews,
    run_foreground,
    spawn_supervisor,
    sync_files,
)
from launcher.job.store import JobDir, JobState, JobStatus
from planner.errors import UserInputError
from tuneboard.cli_ssh import (
    Hostfile,
    Identity,
    KnownHosts,
    SshConfig,
    TrustNewHosts,
    connect_options,
)
from tuneboard.output import console, error_console
from tuneboard.render_launch import (
    TerminalSink,
    render_fit,
    render_preflight,
    render_previews,
    render_sync,
)

EXIT_FAILED = 1
EXIT_REFUSED = 3
EXIT_STOPPED = 130

LAUNCH_HELP = """Check every node, then run the recipe with torchrun on all of them.

Nodes come from the recipe's `cluster:` section or --hostfile (DeepSpeed's
`host slots=N` lines); with neither, the job runs here, without SSH. Preflight
checks every node in parallel (SSH, python, packages and versions, GPUs, RAM,
disk, files, the rendezvous port and the master address from every node), the
recipe's data where the job reads it (here when it is copied from here, else on
the master: present, readable, in its format, rows that fit the task) and
the planner's fit check refuses a job that will not fit (--force to try
anyway). Then the recipe and its data files are copied to each node's workdir
and one torchrun starts per node in its own process group. Logs stream back
prefixed `node/rank`; the first failure anywhere stops every node and names
the node and rank. Ctrl-C stops this job on all nodes and nothing else.

--detach hands the watching (fail-fast stop included) to a small supervisor
process on this machine and prints the job id; `tuneboard status`, `logs -f`
and `stop` find it through the job directory
($XDG_STATE_HOME/tuneboard/jobs/<id>/, docs/jobs-json.md).

Examples:

  tuneboard launch recipe.yaml

  tuneboard launch recipe.yaml --hostfile hosts.txt --dry-run

  tuneboard launch recipe.yaml training.learning_rate=1e-4 --detach

  tuneboard launch recipes/configs/tiny-sft-lora.yaml --cpu
"""


def register(app: typer.Typer) -> None:
    app.command(name="launch", help=LAUNCH_HELP, no_args_is_help=True)(launch)


def launch(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="section.key=value overrides, as `python -m recipes.run` takes them."),
    ] = None,
    hostfile: Hostfile = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Preflight, then print each node's exact command.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Launch even when the planner says it will not fit.")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Print the job id and return; the job keeps running.")
    ] = False,
    trust_new_hosts: TrustNewHosts = False,
    cpu: Annotated[
        bool, typer.Option("--cpu", help="A CPU run: nodes without GPUs are fine (gloo).")
    ] = False,
    master_addr: Annotated[
        str | None,
        typer.Option(
            "--master-addr", help="Address ranks reach the master at (default: its SSH address)."
        ),
    ] = None,
    master_port: Annotated[
        int | None,
        typer.Option("--master-port", help="Rendezvous port (default: cluster.master_port)."),
    ] = None,
    nproc_per_node: Annotated[
        int | None,
        typer.Option("--nproc-per-node", help="Processes per node (default: one per GPU)."),
    ] = None,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds between TERM and KILL when stopping.")
    ] = 10.0,
    node_timeout: Annotated[
        float,
        typer.Option(
            "--node-timeout", help="Seconds a node may be unreachable before the job fails."
        ),
    ] = 60.0,
    identity: Identity = None,
    known_hosts: KnownHosts = None,
    ssh_config: SshConfig = None,
) -> None:
    request = LaunchRequest(
        recipe_path=recipe,
        overrides=tuple(overrides or ()),
        hostfile=hostfile,
        master_addr=master_addr,
        master_port=master_port,
        nproc_per_node=nproc_per_node,
        cpu=cpu,
        force=force,
        grace_s=grace,
        node_timeout_s=node_timeout,
        connect=connect_options(known_hosts, ssh_config, identity, trust_new_hosts),
    )
    raise typer.Exit(run_launch(request, dry_run=dry_run, detach=detach))


def run_launch(request: LaunchRequest, *, dry_run: bool, detach: bool) -> int:
    """The whole launch, rendered; returns the exit code. Shared with `tuneboard resume`."""
    out = console()
    prepared = prepare(request)  # bad input raises UserInputError: tuneboard.cli prints it
    try:
        with connect(prepared) as pool:
            checked = check(prepared, pool)
            render_preflight(out, checked.report)
            render_fit(out, checked.fit, request.force)
            plan = plan_job(prepared, checked, "dry-run" if dry_run else None)
            if dry_run:
                render_previews(out, previews(plan))
                return EXIT_REFUSED if checked.refused(request.force) else 0
            if checked.refused(request.force):
                return EXIT_REFUSED
            job, state = create_job(prepared, plan, checked.fit)
            try:
                results = sync_files(prepared, plan, pool, job)
            except KeyboardInterrupt:
                _record_unstarted(job, state, "stopped", "interrupted while copying files")
                return _fail("interrupted: nothing was started", EXIT_STOPPED)
            render_sync(
                out,
                [
                    (r.node.name, r.value, None if r.error is None else str(r.error))
                    for r in results
                ],
            )
            failed = [r for r in results if not r.ok]
            if failed:
                reason = f"copying files to {failed[0].node.name} failed: {failed[0].error}"
                _record_unstarted(job, state, "failed", reason)
                return _fail(f"{reason} (nothing was started)", EXIT_FAILED)
            if detach:
                pool.close()
                started = spawn_supervisor(job)
                out.print(
                    Text(
                        f"job {started.id} {started.status}, detached: follow it with "
                        f"`tuneboard logs {started.id} -f`, stop it with "
                        f"`tuneboard stop {started.id}`"
                    ),
                    soft_wrap=True,
                )
                out.print(started.id, markup=False, highlight=False)  # last line: the id
                return 0 if started.status in ("running", "succeeded") else EXIT_FAILED
            sink = TerminalSink(out)
            try:
                final = run_foreground(prepared, plan, pool, job, state, sink)
            finally:
                sink.close()
            return _exit_code(final)
    except KeyboardInterrupt:
        return _fail("interrupted before anything started", EXIT_STOPPED)
    except UserInputError:
        raise  # one line and exit 2, printed by tuneboard.cli.main
    except LauncherError as err:
        return _fail(str(err), EXIT_FAILED)


def _record_unstarted(job: JobDir, state: JobState, status: JobStatus, message: str) -> None:
    """A job that never started on any node still gets its final state."""
    job.write_state(
        dataclasses.replace(state, status=status, ended_at=time.time(), message=message)
    )


def _exit_code(state: JobState) -> int:
    if state.status == "succeeded":
        return 0
    if state.status == "stopped":
        return EXIT_STOPPED
    return EXIT_FAILED


def _fail(message: str, code: int) -> int:
    error_console().print(Text(f"error: {message}"), soft_wrap=True)
    return code
