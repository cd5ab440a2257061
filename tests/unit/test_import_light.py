"""planner/, launcher/ and recipes.schema import without torch, transformers or textual."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("torch", "transformers", "textual", "peft", "trl", "deepspeed")


def _loaded_after(code: str) -> set[str]:
    script = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    return set(out.split())


def test_core_packages_do_not_import_heavy_libraries() -> None:
    modules = _loaded_after(
        "import pkgutil, importlib, planner, launcher, recipes.schema\n"
        "for pkg in (planner, launcher, recipes.schema):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
    )
    assert {"planner.fake_trace", "planner.memory.breakdown", "launcher.job.launch"} <= modules
    assert {"launcher.transport.ssh", "recipes.schema.rules"} <= modules
    leaked = [m for m in HEAVY if m in modules]
    assert leaked == [], f"heavy imports leaked: {leaked}"


def test_plan_command_path_stays_light() -> None:
    modules = _loaded_after(
        "from tuneboard import cli, cli_plan, render_plan\n"
        "import planner.search, planner.models, planner.cluster_spec, planner.report"
    )
    leaked = [m for m in HEAVY if m in modules]
    assert leaked == [], f"heavy imports leaked into the plan path: {leaked}"


def test_running_plan_imports_no_launcher_dashboard_or_training_stack() -> None:
    """The CLI imports only the module of the command it runs (tuneboard/cli.py)."""
    script = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('MODS', ' '.join(sorted(sys.modules)), file=sys.stderr))\n"
        "from tuneboard.cli import main\n"
        "main(['plan', '--model', '7b', '--gpus', '8xA800', '--json'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("MODS "))
    modules = set(line.split()[1:])
    assert "planner.search" in modules
    leaked = [m for m in (*HEAVY, "launcher", "paramiko", "tuneboard.dash") if m in modules]
    assert leaked == [], f"`tuneboard plan` imported {leaked}"
