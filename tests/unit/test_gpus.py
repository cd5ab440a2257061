"""The GPU catalog (planner/data/gpus.json) and its lookups (planner/gpus.py)."""

from __future__ import annotations

import json
import re
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from planner import gpus
from planner.errors import PlannerInputError
from planner.gpus import (
    find_gpu,
    gpu_catalog,
    gpu_from_nvml_name,
    gpu_names,
    load_gpu_catalog,
)
from planner.specs import GpuSpec

MIB = 1 << 20
GIB = 1 << 30
CATALOG_JSON = Path(gpus.__file__).with_name("data") / "gpus.json"

REQUIRED = [
    "A800",
    "A800-40GB",
    "A100-40GB",
    "A100-80GB",
    "H800",
    "H100-SXM",
    "H100-PCIe",
    "H200",
    "H20",
    "L40S",
    "L20",
    "A10",
    "RTX-A6000",
    "RTX-3090",
    "RTX-4090",
    "RTX-5090",
    "V100-16GB",
    "V100-32GB",
    "T4",
    "MI300X",
]

FP8_ARCHS = {"ada", "hopper", "blackwell", "cdna3"}


def _raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CATALOG_JSON.read_text(encoding="utf-8"))
    return data


def _raw_entry(name: str) -> dict[str, Any]:
    for entry in _raw()["gpus"]:
        if entry["name"] == name:
            return dict(entry)
    raise AssertionError(name)


# --------------------------------------------------------------------------- loading


def test_catalog_loads_and_is_cached() -> None:
    specs = load_gpu_catalog()
    assert specs is load_gpu_catalog()
    assert all(isinstance(spec, GpuSpec) for spec in specs)
    assert [spec.name for spec in specs] == gpu_names()
    assert [entry.spec for entry in gpu_catalog()] == list(specs)


def test_required_entries_present() -> None:
    names = gpu_names()
    missing = [name for name in REQUIRED if name not in names]
    assert not missing


def test_specs_are_frozen() -> None:
    spec = find_gpu("A800")
    with pytest.raises(FrozenInstanceError):
        spec.mfu = 0.9  # type: ignore[misc]


def test_json_header() -> None:
    raw = _raw()
    assert raw["schema"] == gpus.SCHEMA_VERSION
    notes = raw["notes"]
    for word in ("memory_bytes", "nvlink_gb_per_s", "BOTH directions", "pcie_gb_per_s", "dense"):
        assert word in notes


def test_unit_conversion_a800() -> None:
    spec = find_gpu("A800")
    assert spec == GpuSpec(
        name="A800",
        memory_bytes=80 * GIB,
        bf16_tflops=312.0,
        fp16_tflops=312.0,
        fp8_tflops=None,
        fp32_tflops=19.5,
        hbm_bytes_per_s=2039e9,
        nvlink_bytes_per_s=200e9,  # 400 GB/s both directions -> 200 GB/s one direction
        pcie_bytes_per_s=32e9,
        mfu=0.40,
        vendor="nvidia",
    )


@pytest.mark.parametrize(
    ("name", "vendor_nvlink_gb_per_s"),
    [
        ("A800", 400),
        ("A100-80GB", 600),
        ("A100-40GB", 600),
        ("H100-SXM", 900),
        ("H800", 400),
        ("H200", 900),
        ("H20", 900),
        ("V100-32GB", 300),
    ],
)
def test_nvlink_is_one_direction(name: str, vendor_nvlink_gb_per_s: int) -> None:
    assert _raw_entry(name)["nvlink_gb_per_s"] == vendor_nvlink_gb_per_s
    assert find_gpu(name).nvlink_bytes_per_s == pytest.approx(vendor_nvlink_gb_per_s * 1e9 / 2)


@pytest.mark.parametrize(
    "name", ["H100-PCIe", "A100-PCIe-80GB", "L40S", "L20", "A10", "RTX-4090", "RTX-A6000", "T4"]
)
def test_pcie_cards_have_no_nvlink(name: str) -> None:
    assert find_gpu(name).nvlink_bytes_per_s is None


@pytest.mark.parametrize(
    ("name", "bf16", "memory_gib"),
    [
        ("A100-40GB", 312.0, 40),
        ("A100-80GB", 312.0, 80),
        ("H100-SXM", 989.4, 79.6),
        ("H100-PCIe", 756.5, 79.6),
        ("H200", 989.4, 140.4),
        ("H20", 148.0, 95.6),
        ("L40S", 362.05, 45.0),
        ("RTX-4090", 165.2, 24.0),
        ("MI300X", 1307.4, 192),
    ],
)
def test_datasheet_numbers(name: str, bf16: float, memory_gib: float) -> None:
    spec = find_gpu(name)
    assert spec.bf16_tflops == pytest.approx(bf16)
    assert spec.memory_bytes / GIB == pytest.approx(memory_gib, abs=0.05)


def test_no_bf16_on_volta_and_turing() -> None:
    for name in ("V100-16GB", "V100-32GB", "T4"):
        spec = find_gpu(name)
        assert spec.bf16_tflops is None
        assert spec.fp16_tflops is not None


# --------------------------------------------------------------------------- sanity of every entry


@pytest.mark.parametrize("entry", gpu_catalog(), ids=lambda entry: entry.name)
def test_entry_numbers_sane(entry: gpus.GpuCatalogEntry) -> None:
    spec = entry.spec
    assert spec.memory_bytes > 0
    # memory_bytes is within 7% of the marketed size (NVML reserves / ECC on GDDR).
    assert 0.93 <= spec.memory_bytes / (entry.nominal_memory_gb * GIB) <= 1.0
    assert 0.0 < spec.mfu < 1.0
    assert spec.vendor in {"nvidia", "amd"}
    assert spec.fp16_tflops is not None
    assert spec.fp32_tflops is not None and spec.fp32_tflops > 0
    for tflops in (spec.bf16_tflops, spec.fp16_tflops, spec.fp8_tflops):
        if tflops is not None:
            assert tflops >= spec.fp32_tflops
    if spec.bf16_tflops is not None:
        assert spec.bf16_tflops == spec.fp16_tflops
    if spec.fp8_tflops is not None:
        assert entry.arch in FP8_ARCHS
        assert spec.fp8_tflops == pytest.approx(2 * spec.fp16_tflops, rel=0.03)
    else:
        assert entry.arch not in FP8_ARCHS
    assert spec.bf16_tflops is None or entry.arch not in {"volta", "turing"}
    assert (spec.bf16_tflops is None) == (entry.arch in {"volta", "turing"})
    # bandwidths: device memory 300 GB/s .. 6 TB/s; NVLink above PCIe; PCIe Gen3..Gen5 x16
    assert 300e9 <= spec.hbm_bytes_per_s <= 6e12
    assert spec.pcie_bytes_per_s in (16e9, 32e9, 64e9)
    if spec.nvlink_bytes_per_s is not None:
        assert spec.nvlink_bytes_per_s > spec.pcie_bytes_per_s
        assert entry.form_factor != "pcie"
    # a GPU that streams its own memory faster than its peak FLOPs is wrong by 1000x somewhere
    peak = spec.bf16_tflops or spec.fp16_tflops
    assert 20 <= peak * 1e12 / spec.hbm_bytes_per_s <= 500
    assert entry.source and entry.mfu_source


def test_vendor_of_mi300x_is_amd() -> None:
    assert find_gpu("MI300X").vendor == "amd"
    assert {spec.vendor for spec in load_gpu_catalog() if spec.name != "MI300X"} == {"nvidia"}


def test_datacenter_parts_beat_consumer_mfu() -> None:
    assert find_gpu("A100-80GB").mfu > find_gpu("RTX-4090").mfu
    assert find_gpu("H100-SXM").mfu > find_gpu("H100-PCIe").mfu
    assert find_gpu("A100-80GB").mfu > find_gpu("A100-PCIe-80GB").mfu


def test_names_and_aliases_unique() -> None:
    seen: dict[str, str] = {}
    for entry in gpu_catalog():
        for spelling in (entry.name, *entry.aliases):
            # what a user could type differently and still mean the same entry
            key = re.sub(r"[\s_-]+", "", spelling.lower())
            assert key not in seen, f"{spelling} ({entry.name}) vs {seen[key]}"
            seen[key] = entry.name
            assert find_gpu(spelling) is entry.spec


def test_names_are_cli_friendly() -> None:
    for name in gpu_names():
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", name), name


# --------------------------------------------------------------------------- find_gpu


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("A800", "A800"),
        ("a800", "A800"),
        ("A800-80GB", "A800"),
        ("a800 80g", "A800"),
        ("A800-SXM4-80GB", "A800"),
        ("A800 40GB", "A800-40GB"),
        ("a800_40g", "A800-40GB"),
        ("A800 PCIe", "A800-PCIe"),
        ("A100", "A100-80GB"),
        ("A100-40GB", "A100-40GB"),
        ("a100_40g", "A100-40GB"),
        ("A100 40 GB", "A100-40GB"),
        ("A100 80GB", "A100-80GB"),
        ("a100-80gib", "A100-80GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("A100 PCIe", "A100-PCIe-80GB"),
        ("a100-pci-e-40gb", "A100-PCIe-40GB"),
        ("A100 40GB PCIe", "A100-PCIe-40GB"),
        ("H100", "H100-SXM"),
        ("h100-sxm", "H100-SXM"),
        ("H100_SXM5", "H100-SXM"),
        ("h100 sxm 80gb", "H100-SXM"),
        ("H100 80GB", "H100-SXM"),
        ("NVIDIA H100 80GB HBM3", "H100-SXM"),
        ("h100 pcie", "H100-PCIe"),
        ("H100-PCIe-80GB", "H100-PCIe"),
        ("h800", "H800"),
        ("H200", "H200"),
        ("h200 141gb", "H200"),
        ("H20", "H20"),
        ("h20-96g", "H20"),
        ("l40s", "L40S"),
        ("L20", "L20"),
        ("A10", "A10"),
        ("a10 24gb", "A10"),
        ("A6000", "RTX-A6000"),
        ("rtx a6000", "RTX-A6000"),
        ("RTX_A6000", "RTX-A6000"),
        ("3090", "RTX-3090"),
        ("GeForce RTX 3090", "RTX-3090"),
        ("4090", "RTX-4090"),
        ("rtx4090", "RTX-4090"),
        ("RTX 4090", "RTX-4090"),
        ("rtx-4090-24gb", "RTX-4090"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("5090", "RTX-5090"),
        ("rtx 5090 32gb", "RTX-5090"),
        ("V100", "V100-32GB"),
        ("v100-16gb", "V100-16GB"),
        ("V100 32G", "V100-32GB"),
        ("Tesla V100-SXM2-16GB", "V100-16GB"),
        ("t4", "T4"),
        ("Tesla T4", "T4"),
        ("T4 16GB", "T4"),
        ("mi300x", "MI300X"),
        ("AMD Instinct MI300X", "MI300X"),
        ("  A100-80GB  ", "A100-80GB"),
    ],
)
def test_find_gpu_spellings(text: str, name: str) -> None:
    assert find_gpu(text).name == name


def test_find_gpu_returns_catalog_object() -> None:
    assert find_gpu("a100") is find_gpu("A100-80GB")


@pytest.mark.parametrize(
    ("text", "suggested"),
    [
        ("h100 nvl", ["H100-SXM", "H100-PCIe"]),
        ("a10g", ["A10"]),
        ("mi300", ["MI300X"]),
        ("l40", ["L40S"]),
        ("rtx 4080", ["RTX-4090"]),
        ("H1OO", ["H100-SXM"]),
        ("A100 48GB", ["A100-40GB", "A100-80GB"]),
        ("H100 94GB", ["H100-SXM", "H100-PCIe"]),
    ],
)
def test_find_gpu_unknown_suggests(text: str, suggested: list[str]) -> None:
    with pytest.raises(PlannerInputError) as info:
        find_gpu(text)
    message = str(info.value)
    assert repr(text) in message
    assert "did you mean" in message
    for name in suggested:
        assert name in message
    assert "tuneboard gpus" in message
    assert "\n" not in message


def test_find_gpu_memory_mismatch_names_sizes() -> None:
    with pytest.raises(PlannerInputError, match=r"H100-SXM has 80 GB, not 94 GB"):
        find_gpu("H100 94GB")
    with pytest.raises(PlannerInputError, match=r"H20 has 96 GB, not 141 GB"):
        find_gpu("H20 141GB")


@pytest.mark.parametrize("text", ["", "   ", "gtx1080", "b200", "x", "--"])
def test_find_gpu_unknown_without_close_match(text: str) -> None:
    with pytest.raises(PlannerInputError) as info:
        find_gpu(text)
    assert "tuneboard gpus" in str(info.value)


def test_planner_input_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        find_gpu("not-a-gpu")


# --------------------------------------------------------------------------- NVML names


@pytest.mark.parametrize(
    ("nvml_name", "mib", "name", "has_nvlink"),
    [
        ("NVIDIA A800-SXM4-80GB", 81920, "A800", True),
        ("NVIDIA A800 80GB PCIe", 81920, "A800-PCIe", False),
        ("NVIDIA A800 40GB Active", 40960, "A800-40GB", False),
        ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB", True),
        ("NVIDIA A100-SXM4-40GB", 40536, "A100-40GB", True),  # older drivers
        ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB", True),
        ("NVIDIA A100-PCIE-40GB", 40960, "A100-PCIe-40GB", False),
        ("NVIDIA A100 80GB PCIe", 80994, "A100-PCIe-80GB", False),
        ("NVIDIA H100 80GB HBM3", 81559, "H100-SXM", True),
        ("NVIDIA H100 PCIe", 81559, "H100-PCIe", False),
        ("NVIDIA H800", 81559, "H800", True),
        ("NVIDIA H800 80GB HBM3", 81559, "H800", True),
        ("NVIDIA H200", 143771, "H200", True),
        ("NVIDIA H20", 97871, "H20", True),
        ("NVIDIA L40S", 46068, "L40S", False),
        ("NVIDIA L20", 46068, "L20", False),
        ("NVIDIA A10", 23028, "A10", False),
        ("NVIDIA RTX A6000", 49140, "RTX-A6000", False),
        ("NVIDIA RTX A6000", 48676, "RTX-A6000", False),  # ECC on
        ("NVIDIA GeForce RTX 3090", 24576, "RTX-3090", False),
        ("NVIDIA GeForce RTX 4090", 24564, "RTX-4090", False),
        ("NVIDIA GeForce RTX 5090", 32607, "RTX-5090", False),
        ("Tesla V100-SXM2-16GB", 16160, "V100-16GB", True),
        ("Tesla V100-SXM2-32GB", 32510, "V100-32GB", True),
        ("Tesla T4", 15360, "T4", False),
        ("Tesla T4", 15109, "T4", False),
        ("AMD Instinct MI300X", 196592, "MI300X", True),
    ],
)
def test_gpu_from_nvml_name(nvml_name: str, mib: int, name: str, has_nvlink: bool) -> None:
    spec = gpu_from_nvml_name(nvml_name, mib * MIB)
    assert spec is not None
    assert spec.name == name
    assert spec.memory_bytes == mib * MIB
    assert (spec.nvlink_bytes_per_s is not None) == has_nvlink
    catalog = find_gpu(name)
    assert spec.bf16_tflops == catalog.bf16_tflops
    assert spec.mfu == catalog.mfu


def test_nvml_memory_picks_the_size() -> None:
    small = gpu_from_nvml_name("NVIDIA A100-SXM4", 40960 * MIB)
    large = gpu_from_nvml_name("NVIDIA A100-SXM4", 81920 * MIB)
    assert small is not None and small.name == "A100-40GB"
    assert large is not None and large.name == "A100-80GB"
    v100 = gpu_from_nvml_name("Tesla V100-SXM2", 16160 * MIB)
    assert v100 is not None and v100.name == "V100-16GB"


@pytest.mark.parametrize(
    ("nvml_name", "mib", "name"),
    [
        ("Tesla V100-PCIE-32GB", 32768, "V100-32GB"),
        ("Tesla V100-PCIE-16GB", 16160, "V100-16GB"),
        ("NVIDIA H800 PCIe", 81559, "H800"),
        ("NVIDIA H200 NVL", 143771, "H200"),
    ],
)
def test_nvml_pcie_variant_of_sxm_entry_loses_nvlink(nvml_name: str, mib: int, name: str) -> None:
    spec = gpu_from_nvml_name(nvml_name, mib * MIB)
    assert spec is not None
    assert spec.name == name
    assert spec.nvlink_bytes_per_s is None
    assert find_gpu(name).nvlink_bytes_per_s is not None  # the catalog itself is untouched


@pytest.mark.parametrize(
    ("nvml_name", "mib"),
    [
        ("NVIDIA A10G", 23028),
        ("NVIDIA H100 NVL", 95830),  # 94 GB card, not in the catalog
        ("NVIDIA L40", 46068),
        ("NVIDIA GeForce RTX 4090 D", 24564),
        ("NVIDIA B200", 183359),
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", 4864),
        ("NVIDIA A100-SXM4-80GB", 16384),  # memory far from every A100
        ("Tesla V100S-PCIE-32GB", 32768),
        ("", 1024),
        ("NVIDIA", 1024),
    ],
)
def test_gpu_from_nvml_name_unknown(nvml_name: str, mib: int) -> None:
    assert gpu_from_nvml_name(nvml_name, mib * MIB) is None


def test_gpu_from_nvml_name_rejects_bad_memory() -> None:
    with pytest.raises(ValueError):
        gpu_from_nvml_name("NVIDIA H100 80GB HBM3", 0)


# --------------------------------------------------------------------------- JSON validation


def _catalog_with(entry: dict[str, Any]) -> dict[str, Any]:
    raw = _raw()
    return {"schema": raw["schema"], "notes": raw["notes"], "gpus": [entry]}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory_bytes", 0),
        ("memory_bytes", 80.5),
        ("mfu", 1.2),
        ("mfu", 0),
        ("bf16_tflops", -1),
        ("bf16_tflops", "312"),
        ("form_factor", "mxm"),
        ("arch", "pascal"),
        ("memory_basis", "guess"),
        ("name", ""),
        ("aliases", "A800-80GB"),
    ],
)
def test_bad_json_entry_rejected(field: str, value: object) -> None:
    entry = _raw_entry("A800")
    entry[field] = value
    with pytest.raises(ValueError, match=field if field != "name" else "name"):
        gpus._parse_catalog(_catalog_with(entry))


def test_missing_tflops_key_rejected() -> None:
    entry = _raw_entry("A800")
    del entry["fp8_tflops"]
    with pytest.raises(ValueError, match="fp8_tflops"):
        gpus._parse_catalog(_catalog_with(entry))


def test_duplicate_alias_rejected() -> None:
    first = _raw_entry("A800")
    second = _raw_entry("A100-80GB")
    second["aliases"] = [*second["aliases"], "a800_sxm"]
    raw = _raw()
    with pytest.raises(ValueError, match="reads the same"):
        gpus._parse_catalog({"schema": raw["schema"], "gpus": [first, second]})


def test_wrong_schema_rejected() -> None:
    with pytest.raises(ValueError, match="schema"):
        gpus._parse_catalog({"schema": 2, "gpus": [_raw_entry("A800")]})
