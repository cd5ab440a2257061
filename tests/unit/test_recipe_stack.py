"""`python -m recipes.run` on a machine without the training stack: one line naming what is
missing and how to install it, exit 2, never a ModuleNotFoundError traceback. The stack is
hidden from the child process by a sitecustomize shim (nothing is uninstalled)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.train.stack import BNB_CPU_KERNEL_WARNING
from recipes.train.toy_data import write
from tests.conftest import ROOT

RECIPE = ROOT / "recipes" / "configs" / "tiny-sft-lora.yaml"
INSTALL = (
    "install torch for your CUDA first (https://pytorch.org/get-started), "
    "then: pip install 'tuneboard[train]'"
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write(tmp_path / "data" / "tiny", rows=16, seed=0)
    return tmp_path


def run_without(
    workdir: Path, hidden: tuple[str, ...], *args: str
) -> subprocess.CompletedProcess[str]:
    """`python -m recipes.run tiny-sft-lora.yaml ARGS` with these modules made unimportable
    (None in sys.modules: `import trl` raises ModuleNotFoundError, find_spec says absent)."""
    shim = workdir / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in hidden)
    )
    env = {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "recipes.run", str(RECIPE), f"output.dir={workdir / 'out'}", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_trl_transformers_peft_is_one_line_with_the_install_command(workdir: Path) -> None:
    done = run_without(workdir, ("trl", "transformers", "peft"))
    message = (
        "the training stack is not installed here (missing: transformers, peft, trl): " + INSTALL
    )
    assert (done.returncode, done.stderr, done.stdout) == (2, f"error: {message}\n", "")
    status = json.loads((workdir / "out" / "status.json").read_text())
    assert (status["phase"], status["error"]) == ("failed", message)


def test_check_needs_no_training_stack(workdir: Path) -> None:
    done = run_without(workdir, ("trl", "transformers", "peft", "torch"), "--check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("recipe ok:")


def test_a_stack_module_missing_once_training_starts_is_one_line_too(workdir: Path) -> None:
    # `trl` is there (find_spec finds it) but a module the family imports is not: a trl
    # too old or half-removed.
    done = run_without(workdir, ("trl.trainer",))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: the training stack here is incomplete or too old (trl.")
    assert done.stderr.endswith(INSTALL + "\n")


def _import_bitsandbytes(quiet: bool) -> str:
    code = "import bitsandbytes"
    if quiet:
        code = "from recipes.train.stack import quiet_known_noise; quiet_known_noise(); " + code
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_the_bitsandbytes_cpu_kernel_warning_is_dropped() -> None:
    pytest.importorskip("bitsandbytes")
    if BNB_CPU_KERNEL_WARNING not in _import_bitsandbytes(quiet=False):
        pytest.skip("bitsandbytes says nothing on this CPU (no AVX512-BF16 or no `kernels`)")
    assert BNB_CPU_KERNEL_WARNING not in _import_bitsandbytes(quiet=True)
