"""`--gpus`, `--node-ram`, `--network` parsing."""

from __future__ import annotations

import pytest

from planner.cluster_spec import build_cluster, parse_bytes, parse_gpus, parse_network
from planner.errors import PlannerInputError


@pytest.mark.parametrize(
    ("text", "gpu", "nodes", "per_node"),
    [
        ("24xA800", "A800", 3, 8),
        ("3x8xA800", "A800", 3, 8),
        ("8xH100", "H100-SXM", 1, 8),
        ("A100-40GB:16", "A100-40GB", 2, 8),
        ("4xRTX4090", "RTX-4090", 1, 4),
        ("2x4xL40S", "L40S", 2, 4),
        ("H200", "H200", 1, 8),
    ],
)
def test_gpus_forms(text: str, gpu: str, nodes: int, per_node: int) -> None:
    g, n, p = parse_gpus(text)
    assert (g.name, n, p) == (gpu, nodes, per_node)


def test_gpus_per_node_option() -> None:
    _gpu, n, p = parse_gpus("24xA800", gpus_per_node=4)
    assert (n, p) == (6, 4)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("12xA100", "not a whole number of 8-GPU nodes"),
        ("0xA100", "must be positive"),
        ("axb", "unknown GPU 'axb'"),
        ("24xA8000", "A8000"),
        ("", "write COUNTxTYPE"),
    ],
)
def test_gpus_errors_name_the_value(text: str, needle: str) -> None:
    with pytest.raises(PlannerInputError) as err:
        parse_gpus(text)
    assert needle in str(err.value)


def test_unknown_gpu_suggests_close_names() -> None:
    with pytest.raises(PlannerInputError) as err:
        parse_gpus("8xA80")
    assert "A800" in str(err.value)


def test_sizes_and_networks() -> None:
    assert parse_bytes("1TB", "--node-ram") == 10**12
    assert parse_bytes("512GiB", "--node-ram") == 512 * 1024**3
    assert parse_network("200gbps") == pytest.approx(25e9)
    assert parse_network("4x200gbps") == pytest.approx(100e9)
    assert parse_network("25GB/s") == pytest.approx(25e9)
    with pytest.raises(PlannerInputError, match="--network"):
        parse_network("fast")
    with pytest.raises(PlannerInputError, match="--node-ram"):
        parse_bytes("-3GB", "--node-ram")


def test_cluster_defaults_are_stated() -> None:
    cl = build_cluster("3x8xA800")
    assert cl.world_size == 24
    assert cl.node_ram_bytes == 2 * 8 * cl.gpu.memory_bytes
    assert cl.inter_node_bytes_per_s == pytest.approx(25e9)
    assert cl.nvme_bytes is None
    assert build_cluster("8xA800", node_ram="1TB").node_ram_bytes == 10**12
