"""docs/cli.md is generated from --help; it must match the CLI as it is now."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_cli_reference_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/gen_cli_docs.py", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
