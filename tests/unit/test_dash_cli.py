"""`tuneboard dashboard` and `tuneboard agent` on the command line: bad input is one clean
line and exit code 2; the agent runs; the data layer never imports textual."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replay", "nope.jsonl"], "--replay 'nope.jsonl': no such file"),
        (["--fake-gpus", "3y8"], "--fake-gpus '3y8': write NODESxGPUS like 3x8"),
        (["no/such/job"], "'no/such/job' is not a directory, nor a job"),
        (["--interval", "0"], "--interval must be positive"),
        (["--replay", "tests/data/replay-3x8-a800.jsonl", "--speed", "0"], "--speed must be"),
        (["--replay", "README.md"], "README.md:1: not JSON"),
    ],
)
def test_dashboard_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = run_cli("dashboard", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


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
