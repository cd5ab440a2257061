"""`tuneboard dashboard` and `tuneboard agent`: watch GPUs and a job; sample a node.

Importing this module is light: textual is imported only when the dashboard starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tuneboard.cli_ssh import (
    Hostfile,
    Identity,
    KnownHosts,
    SshConfig,
    TrustNewHosts,
    check_ssh_files,
    connect_options,
)

if TYPE_CHECKING:
    from launcher.transport.base import ConnectOptions
    from tuneboard.dash.config import StopJob
    from tuneboard.sources.base import Source

DASHBOARD_HELP = """Watch every GPU of every node and the job's loss, live, in the terminal.

Keys: 1 Cluster · 2 Job · 3 Plan · ? help · q quit.

Examples:

  tuneboard dashboard                         this machine's GPUs (NVML)

  tuneboard dashboard runs/llama-sft          + a job's metrics, status and logs

  tuneboard dashboard --replay tests/data/replay-3x8-a800.jsonl --speed 10

  tuneboard dashboard --hosts gpu1,gpu2,gpu3     every node's GPUs, over SSH

  tuneboard dashboard latest                   the last launched job, on its nodes

  tuneboard dashboard --fake-gpus 3x8 --record demo.jsonl

Nodes (--hosts, --hostfile, or a launched job's own nodes) are sampled by
`tuneboard agent`, started over SSH on each: tuneboard must be installed there
(--python names the node's python). Host keys are checked against known_hosts, as
`tuneboard launch` does.
"""

AGENT_HELP = """Sample this node for the dashboard: one JSON line per interval on stdout.

Each line holds the GPUs (NVML), CPU and RAM (/proc), and the new lines of the job's
metrics, status and logs. The dashboard starts it on every node over SSH.

  tuneboard agent --job-dir runs/llama-sft --interval 1
"""


def register(app: typer.Typer) -> None:
    app.command(name="dashboard", help=DASHBOARD_HELP)(dashboard)
    app.command(name="agent", help=AGENT_HELP)(agent)


def _fake_shape(text: str) -> tuple[int, int]:
    from planner.errors import UserInputError

    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = ["1", parts[0]]
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserInputError(
            f"--fake-gpus {text!r}: write NODESxGPUS like 3x8, or a GPU count like 8"
        )
    return int(parts[0]), int(parts[1])


def _resolve_job(job: str) -> Path:
    """A directory, or a launcher job: its id, a unique prefix of it, or `latest`."""
    from planner.errors import UserInputError

    path = Path(job).expanduser()
    if path.exists():
        return path
    try:
        from launcher.job.store import find_job
    except ImportError:  # the launcher's job layer is not installed
        raise UserInputError(f"job directory {job!r} does not exist") from None
    try:
        return find_job(job).path
    except UserInputError as exc:
        raise UserInputError(f"{job!r} is not a directory, nor a job: {exc}") from None


def latest_job_or_none() -> str | None:
    """`latest` when a job was launched from this machine, else None."""
    from planner.errors import UserInputError

    try:
        _resolve_job("latest")
    except UserInputError:
        return None
    return "latest"


def _launcher_stop(path: Path) -> StopJob | None:
    """Stop through the launcher when `path` is one of its job directories."""
    if not (path / "state.json").is_file():
        return None

    def stop() -> str:
        from launcher.job.control import stop_job
        from launcher.job.store import JobDir

        outcome = stop_job(JobDir(path))
        return f"job {outcome.state.id}: {outcome.state.status} ({outcome.how})"

    return stop


def dashboard(
    job: Annotated[
        str | None,
        typer.Argument(
            help="A job directory or a recipe's output directory to watch, or a launched "
            "job's id (a prefix of it, or `latest`).",
            show_default=False,
        ),
    ] = None,
    replay: Annotated[
        Path | None, typer.Option(help="Play back a recording made with --record.")
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Replay speed: 1 = as recorded, 10 = 10× faster.")
    ] = 1.0,
    record: Annotated[
        Path | None,
        typer.Option(help="Write every sample the sources see to this file (JSON lines)."),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 1.0,
    no_mouse: Annotated[bool, typer.Option("--no-mouse", help="Do not capture the mouse.")] = False,
    fake_gpus: Annotated[
        str | None,
        typer.Option(help="Fake NVIDIA GPUs instead of NVML, e.g. 3x8 (demos, benchmarks)."),
    ] = None,
    compact: Annotated[
        bool | None,
        typer.Option(
            "--compact/--detailed",
            help="Cluster layout (default: compact above 64 GPUs).",
            show_default=False,
        ),
    ] = None,
    hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--hosts",
            help="Nodes to watch over SSH: `\\[user@]host[:port]`, comma-separated or repeated.",
            show_default=False,
        ),
    ] = None,
    hostfile: Hostfile = None,
    python: Annotated[
        str | None,
        typer.Option(
            "--python",
            help="The nodes' python, with tuneboard \\[default: the job's, else python3].",
            show_default=False,
        ),
    ] = None,
    remote_job_dir: Annotated[
        str | None,
        typer.Option(
            "--remote-job-dir",
            help="A job or output directory on every node for the agents to follow.",
            show_default=False,
        ),
    ] = None,
    trust_new_hosts: TrustNewHosts = False,
    identity: Identity = None,
    known_hosts: KnownHosts = None,
    ssh_config: SshConfig = None,
    agent_fake_gpus: Annotated[int | None, typer.Option(hidden=True)] = None,
    stats: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    from planner.errors import UserInputError
    from tuneboard.dash.config import DashConfig

    if interval <= 0:
        raise UserInputError(f"--interval must be positive, got {interval}")
    sources: list[Source] = []
    config = DashConfig(interval_s=interval, record=record, stats_path=stats, compact=compact)
    labels: list[str] = []
    remote = bool(hosts) or hostfile is not None
    if replay is not None and (job is not None or fake_gpus is not None or remote):
        raise UserInputError(
            "--replay plays a recording: give it without JOB, --fake-gpus, --hosts or --hostfile"
        )
    if fake_gpus is not None and remote:
        raise UserInputError("--fake-gpus fakes this machine's GPUs: give it without --hosts")
    if hosts and hostfile is not None:
        raise UserInputError("give the nodes as --hosts or as --hostfile, not both")
    ssh = _SshChoice(
        hosts=[h for text in hosts or () for h in text.split(",")],
        hostfile=hostfile,
        python=python,
        job_dir=remote_job_dir,
        # flags win over a launched job's own SSH settings; none given: the job's (or ssh's)
        options=connect_options(known_hosts, ssh_config, identity, trust_new_hosts)
        if (known_hosts, ssh_config, identity, trust_new_hosts) != (None, None, None, False)
        else None,
        fake_gpus=agent_fake_gpus,
        interval_s=interval,
    )
    if replay is not None:
        from tuneboard.sources.replay import ReplayError, ReplaySource, check_recording

        try:
            check_recording(replay)
            source = ReplaySource(replay, speed=speed)
        except ReplayError as exc:
            raise UserInputError(str(exc)) from None
        sources.append(source)
        config.clock = source.virtual_time
        labels.append(f"replay ×{speed:g}" if speed != 1 else "replay")
    else:
        job_dir = None if job is None else _resolve_job(job)
        agents = ssh.sources(job_dir)
        if agents is not None:
            sources.extend(agents)
            labels.append("SSH agents")  # the top bar adds the node and GPU counts
        elif fake_gpus is not None:
            from tuneboard.sources.gpu_sources import FakeClusterSource

            n_nodes, per_node = _fake_shape(fake_gpus)
            sources.append(FakeClusterSource(n_nodes, per_node, interval_s=interval))
            labels.append("fake GPUs")
        else:
            from tuneboard.sources.gpu_sources import LocalGpuSource

            sources.append(LocalGpuSource(interval_s=interval))
        if job_dir is not None:
            from tuneboard.sources.job_dir import JobDirSource

            # a stat per file: cheap, so files are checked at least twice a second
            sources.append(JobDirSource(job_dir, interval_s=min(interval, 0.5)))
            config.stop_job = _launcher_stop(job_dir)
            labels.append(job_dir.name)
            config.start_mode = "job"
    if record is not None:
        labels.append(f"● rec {record.name}")
    config.sources = sources
    config.label = " · ".join(labels)
    from tuneboard.dash.app import DashboardApp

    DashboardApp(config).run(mouse=not no_mouse)


@dataclass(frozen=True)
class _SshChoice:
    """Which nodes the dashboard samples over SSH, and how."""

    hosts: list[str]
    hostfile: Path | None
    python: str | None
    job_dir: str | None
    #: From the SSH flags; None when none was given (a launched job's own, else ssh's).
    options: ConnectOptions | None
    fake_gpus: int | None
    interval_s: float

    def sources(self, job_dir: Path | None) -> list[Source] | None:
        """An agent source per node of --hosts / --hostfile, else of a launched job with a
        remote node; None: this machine only."""
        from launcher.cluster import Cluster
        from tuneboard.sources.ssh_agent import AgentCommand, ssh_agent_sources

        options, python = self.options, self.python
        # a bad hostfile or job state raises UserInputError: one line from tuneboard.cli
        if self.hosts:
            nodes = Cluster.from_hosts(self.hosts, "--hosts").nodes
        elif self.hostfile is not None:
            nodes = Cluster.from_hostfile(self.hostfile).nodes
        elif job_dir is not None and (job_dir / "state.json").is_file():
            from launcher.job.reconnect import connect_options as job_options
            from launcher.job.reconnect import nodes_of
            from launcher.job.store import JobDir

            state = JobDir(job_dir).read_state()
            nodes = nodes_of(state)
            if all(node.local for node in nodes):
                return None
            options = options or job_options(state)
            python = python or state.python
        else:
            return None
        options = options or connect_options(None, None, None, False)
        check_ssh_files(options)
        command = AgentCommand(
            python=python or "python3",
            interval_s=self.interval_s,
            job_dir=self.job_dir,
            fake_gpus=self.fake_gpus,
        )
        return list(ssh_agent_sources(nodes, options, command))


def agent(
    job_dir: Annotated[
        Path | None, typer.Option(help="Job or output directory: metrics, status, logs.")
    ] = None,
    metrics: Annotated[Path | None, typer.Option(help="A metrics.jsonl to follow.")] = None,
    log: Annotated[
        list[Path] | None, typer.Option(help="A log file to follow (repeatable).")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 1.0,
    node: Annotated[str | None, typer.Option(help="Node name [default: hostname].")] = None,
    fake_gpus: Annotated[
        int | None, typer.Option(help="Fake NVIDIA GPUs instead of NVML (tests, demos).")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many samples.")] = None,
) -> None:
    from planner.errors import UserInputError
    from tuneboard.agent import AgentOptions, run_agent

    if interval <= 0:
        raise UserInputError(f"--interval must be positive, got {interval}")
    raise typer.Exit(
        run_agent(
            AgentOptions(
                interval_s=interval,
                node=node,
                job_dir=job_dir,
                metrics=metrics,
                logs=list(log or []),
                fake_gpus=fake_gpus,
                count=count,
            )
        )
    )
