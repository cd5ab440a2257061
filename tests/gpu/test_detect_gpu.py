"""On a machine with an NVIDIA GPU: `plan` without --gpus detects it through NVML."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.gpu


def test_plan_detects_local_gpus() -> None:
    pynvml = pytest.importorskip("pynvml")
    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
        total = int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total)
    finally:
        pynvml.nvmlShutdown()
    result = run_cli("plan", "--model", "qwen2.5-0.5b", "--json")
    assert result.returncode == 0, result.stderr
    cluster = result.json()["cluster"]
    assert cluster["gpus_per_node"] == count and cluster["nodes"] == 1
    assert cluster["gpu"]["memory_bytes"] == total
