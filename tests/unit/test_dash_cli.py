"""`tuneboard dashboard` and `tuneboard agent` on the command line: bad input is one clean
line and exit code 2; the agent runs; the data layer never imports textual."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import ROOT, run_cli
from tests.support.jobs import add_job
from tuneboard import cli_dashboard
from tuneboard.dash.config import DashConfig
from tuneboard.sources.agent_stream import AgentStreamSource
from tuneboard.sources.job_dir import JobDirSource
from tuneboard.sources.ssh_agent import SshAgentConnect


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replay", "nope.jsonl"], "--replay 'nope.jsonl': no such file"),
        (["--fake-gpus", "3y8"], "--fake-gpus '3y8': write NODESxGPUS like 3x8"),
        (["no/such/job"], "'no/such/job' is not a directory, nor a job"),
        (["--interval", "0"], "--interval must be positive"),
        (["--replay", "tests/data/replay-3x8-a800.jsonl", "--speed", "0"], "--speed must be"),
        (["--replay", "README.md"], "README.md:1: not JSON"),
        (["--hosts", "gpu1,,gpu2"], "--hosts[1]: empty host"),
        (["--hosts", "gpu1:99999"], "port must be 1-65535, got '99999'"),
        (["--hostfile", "no/such/hostfile"], "cannot read hostfile no/such/hostfile"),
        (["--hosts", "gpu1", "--hostfile", "h"], "as --hosts or as --hostfile, not both"),
        (["--hosts", "gpu1", "--fake-gpus", "8"], "give it without --hosts"),
        (["--replay", "tests/data/replay-3x8-a800.jsonl", "--hosts", "g"], "without JOB, "),
    ],
)
def test_dashboard_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = run_cli("dashboard", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_dashboard_bad_ssh_files_are_one_line_before_anything_starts(tmp_path: Path) -> None:
    bad_config = tmp_path / "ssh_config"
    bad_config.write_text("Host\n  HostName\n")
    cases = [
        (["-i", str(tmp_path / "no-key")], f"--identity {tmp_path / 'no-key'}: no such file"),
        (["--known-hosts", str(tmp_path)], f"--known-hosts {tmp_path} is not a file"),
        (["--ssh-config", str(bad_config)], f"cannot read ssh config {bad_config}"),
    ]
    for args, message in cases:
        result = run_cli("dashboard", "--hosts", "gpu1", *args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_agent_command_prints_json_lines() -> None:
    result = run_cli("agent", "--fake-gpus", "2", "--count", "2", "--interval", "0.05")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    kinds = [s["kind"] for s in first["snapshots"]]
    assert first["v"] == 1 and kinds[:2] == ["gpus", "host"]
    assert len(first["snapshots"][0]["gpus"]) == 2


def test_data_layer_and_commands_do_not_import_textual() -> None:
    code = (
        "import pkgutil, importlib, sys, tuneboard.sources\n"
        "for m in pkgutil.iter_modules(tuneboard.sources.__path__, 'tuneboard.sources.'):\n"
        "    importlib.import_module(m.name)\n"
        "import tuneboard.agent, tuneboard.cli, tuneboard.cli_dashboard\n"
        "from tuneboard.dash import state, alerts, format, braille, cluster_rows, job_text\n"
        "from tuneboard.dash import plan_form, config, table_model\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    assert "tuneboard.sources.replay" in out and "tuneboard.dash.plan_form" in out
    assert not [m for m in out if m == "textual" or m.startswith("textual.")]


app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
cli_dashboard.register(app)


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[DashConfig]:
    """The DashConfig each `tuneboard dashboard` would have run with (the app is not run)."""
    from tuneboard.dash.app import DashboardApp

    configs: list[DashConfig] = []

    def fake_run(self: DashboardApp, **_: object) -> None:
        configs.append(self.config)

    monkeypatch.setattr(DashboardApp, "run", fake_run)
    return configs


def _agents(config: DashConfig) -> list[SshAgentConnect]:
    out = []
    for source in config.sources:
        assert isinstance(source, AgentStreamSource)
        assert isinstance(source.connect, SshAgentConnect)
        out.append(source.connect)
    return out


def test_dashboard_hosts_become_ssh_agents(tmp_path: Path, shown: list[DashConfig]) -> None:
    args = ["dashboard", "--hosts", "gpu1,deploy@gpu2:2222", "--hosts", "gpu3", "--interval", "2"]
    args += ["--python", "/opt/tb/bin/python", "--known-hosts", str(tmp_path / "kh")]
    args += ["--remote-job-dir", "runs/sft"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (config,) = shown
    agents = _agents(config)
    assert [a.node.name for a in agents] == ["gpu1", "gpu2:2222", "gpu3"]
    assert agents[1].node.user == "deploy" and agents[1].node.port == 2222
    assert all(a.options.known_hosts == tmp_path / "kh" for a in agents)
    assert not agents[0].options.trust_new_hosts  # strict host keys unless asked
    assert agents[2].command.argv("gpu3") == [
        "/opt/tb/bin/python", "-m", "tuneboard", "agent", "--interval", "2",
        "--node", "gpu3", "--job-dir", "runs/sft",
    ]  # fmt: skip
    assert config.label == "SSH agents"


def test_dashboard_of_a_launched_job_samples_its_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: list[DashConfig]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    job = add_job(tmp_path / "tuneboard", "tiny-0101-000001-aaaa", 1.0)
    result = CliRunner().invoke(app, ["dashboard", "latest"])
    assert result.exit_code == 0, result.output
    (config,) = shown
    *agent_sources, job_source = config.sources
    assert isinstance(job_source, JobDirSource)
    agents = _agents(DashConfig(sources=agent_sources))
    # the job's own nodes, its python and the SSH settings it was launched with
    assert [(a.node.name, a.node.host) for a in agents] == [
        ("node0", "10.0.0.1"),
        ("node1", "10.0.0.2"),
    ]
    assert all(
        a.command.python == "python3" and a.options.known_hosts == Path("/kh") for a in agents
    )
    assert config.start_mode == "job" and config.stop_job is not None
    assert config.label == f"SSH agents · {job.path.name}"

    # SSH flags given on the command line win over the job's own settings
    key = tmp_path / "key"
    key.write_text("not read here")
    result = CliRunner().invoke(app, ["dashboard", "latest", "-i", str(key)])
    assert result.exit_code == 0, result.output
    agents = _agents(DashConfig(sources=shown[-1].sources[:-1]))
    assert all(a.options.identity_files == (key,) for a in agents)
