"""The GPU catalog (planner/data/gpus.json) and lookups by user text or NVML name.

Units in the JSON are the vendor's (GB/s, TFLOPS); `load_gpu_catalog` converts
them to `GpuSpec` fields (bytes, bytes/s, TFLOPS floats). The one conversion
that is not a unit change: the JSON's `nvlink_gb_per_s` is NVIDIA's figure,
both directions added (A100: 600), while `GpuSpec.nvlink_bytes_per_s` is one
direction (A100: 300e9), like `pcie_bytes_per_s`. See the JSON's "notes".
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Literal

from planner.errors import PlannerInputError
from planner.specs import GpuSpec

SCHEMA_VERSION = 1
CATALOG_RESOURCE = "data/gpus.json"

FormFactor = Literal["sxm", "pcie", "oam"]
_FORM_FACTORS: tuple[FormFactor, ...] = ("sxm", "pcie", "oam")
_ARCHS = frozenset({"volta", "turing", "ampere", "ada", "hopper", "blackwell", "cdna3"})
_MEMORY_BASES = frozenset({"nvml", "nominal"})

_GB = 1e9
_GIB = 1 << 30

# Relative tolerance when matching a memory size (an NVML total, or a size in the
# user's text) against a catalog entry. NVML totals move with driver and ECC mode
# by up to ~6%; the closest two sizes of one GPU family differ by 2x.
_MEMORY_TOLERANCE = 0.10

# Words that never distinguish two GPUs.
_NOISE_TOKENS = frozenset(
    {"nvidia", "geforce", "tesla", "quadro", "amd", "instinct", "hbm2", "hbm2e", "hbm3", "hbm3e"}
)
# Extra noise in NVML product names only ("NVIDIA A800 40GB Active").
_NVML_NOISE_TOKENS = frozenset({"active"})
# NVML name tokens that say the board is a PCIe card (H100 NVL / H200 NVL are PCIe cards).
_NVML_PCIE_TOKENS = frozenset({"pcie", "nvl"})

_MEMORY_TOKEN = re.compile(r"^(\d+)(?:gb|g|gib)$")
_SXM_TOKEN = re.compile(r"^sxm\d*$")


@dataclass(frozen=True)
class GpuCatalogEntry:
    """One catalog entry: the `GpuSpec` plus what the catalog says about it."""

    spec: GpuSpec
    aliases: tuple[str, ...]
    arch: str
    form_factor: FormFactor
    nominal_memory_gb: int  # marketed capacity ("80GB")
    memory_basis: str  # "nvml": memory_bytes is a typical NVML total; "nominal": GiB x 2^30
    mfu_source: str
    source: str

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class _Parsed:
    """User or NVML text reduced to comparable parts."""

    base: str  # the name without memory size, e.g. "a100pcie", "rtx4090"
    memory_gb: int | None  # from a "40GB" / "40G" token


# --------------------------------------------------------------------------- loading


@functools.lru_cache(maxsize=1)
def gpu_catalog() -> tuple[GpuCatalogEntry, ...]:
    """Every catalog entry, in file order (cached)."""
    text = resources.files("planner").joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    return _parse_catalog(json.loads(text))


@functools.lru_cache(maxsize=1)
def load_gpu_catalog() -> tuple[GpuSpec, ...]:
    """Every catalog GPU as a `GpuSpec`, in file order (cached)."""
    return tuple(entry.spec for entry in gpu_catalog())


def gpu_names() -> list[str]:
    """Canonical catalog names, in file order."""
    return [entry.name for entry in gpu_catalog()]


def _parse_catalog(doc: Any) -> tuple[GpuCatalogEntry, ...]:
    where = f"planner/{CATALOG_RESOURCE}"
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: top level must be an object")
    if doc.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"{where}: schema {doc.get('schema')!r}, expected {SCHEMA_VERSION}")
    raw_gpus = doc.get("gpus")
    if not isinstance(raw_gpus, list) or not raw_gpus:
        raise ValueError(f"{where}: 'gpus' must be a non-empty list")
    entries = tuple(_parse_entry(raw, f"{where}: gpus[{i}]") for i, raw in enumerate(raw_gpus))
    seen: dict[tuple[str, int | None], str] = {}
    for entry in entries:
        for spelling in (entry.name, *entry.aliases):
            key = _key(_parse(spelling))
            if not key[0]:
                raise ValueError(f"{where}: {spelling!r} ({entry.name}) has no model name in it")
            if key in seen:
                raise ValueError(
                    f"{where}: {spelling!r} ({entry.name}) reads the same as a name of {seen[key]}"
                )
            seen[key] = entry.name
    return entries


def _parse_entry(raw: Any, where: str) -> GpuCatalogEntry:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be an object")
    name = _req_str(raw, "name", where)
    where = f"{where} ({name})"
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ValueError(f"{where}: 'aliases' must be a list of non-empty strings")
    form_factor = _req_str(raw, "form_factor", where)
    if form_factor not in _FORM_FACTORS:
        raise ValueError(f"{where}: form_factor {form_factor!r} not in {_FORM_FACTORS}")
    arch = _req_str(raw, "arch", where)
    if arch not in _ARCHS:
        raise ValueError(f"{where}: arch {arch!r} not in {sorted(_ARCHS)}")
    memory_basis = _req_str(raw, "memory_basis", where)
    if memory_basis not in _MEMORY_BASES:
        raise ValueError(f"{where}: memory_basis {memory_basis!r} not in {sorted(_MEMORY_BASES)}")
    memory_bytes = _req_int(raw, "memory_bytes", where)
    nominal_memory_gb = _req_int(raw, "nominal_memory_gb", where)
    nvlink = _opt_float(raw, "nvlink_gb_per_s", where)
    mfu = _req_float(raw, "mfu", where)
    if not 0.0 < mfu < 1.0:
        raise ValueError(f"{where}: mfu {mfu} must be in (0, 1)")
    spec = GpuSpec(
        name=name,
        memory_bytes=memory_bytes,
        bf16_tflops=_opt_float(raw, "bf16_tflops", where),
        fp16_tflops=_opt_float(raw, "fp16_tflops", where),
        fp8_tflops=_opt_float(raw, "fp8_tflops", where),
        fp32_tflops=_opt_float(raw, "fp32_tflops", where),
        hbm_bytes_per_s=_req_float(raw, "hbm_gb_per_s", where) * _GB,
        # JSON: both directions added (vendor figure); GpuSpec: one direction.
        nvlink_bytes_per_s=None if nvlink is None else nvlink * _GB / 2,
        pcie_bytes_per_s=_req_float(raw, "pcie_gb_per_s", where) * _GB,
        mfu=mfu,
        vendor=_req_str(raw, "vendor", where),
    )
    return GpuCatalogEntry(
        spec=spec,
        aliases=tuple(aliases),
        arch=arch,
        form_factor=form_factor,
        nominal_memory_gb=nominal_memory_gb,
        memory_basis=memory_basis,
        mfu_source=_req_str(raw, "mfu_source", where),
        source=_req_str(raw, "source", where),
    )


def _req_str(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: {key!r} must be a non-empty string")
    return value


def _req_int(raw: dict[str, Any], key: str, where: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{where}: {key!r} must be a positive integer")
    return value


def _opt_float(raw: dict[str, Any], key: str, where: str) -> float | None:
    if key not in raw:
        raise ValueError(f"{where}: {key!r} missing (use null when not supported)")
    value = raw[key]
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{where}: {key!r} must be a positive number or null")
    return float(value)


def _req_float(raw: dict[str, Any], key: str, where: str) -> float:
    value = _opt_float(raw, key, where)
    if value is None:
        raise ValueError(f"{where}: {key!r} must be a positive number")
    return value


# --------------------------------------------------------------------------- parsing names


def _tokens(text: str) -> list[str]:
    lowered = re.sub(r"pci[\s_-]*e", "pcie", text.lower())
    lowered = re.sub(r"(\d)[\s_-]+(gib|gb|g)\b", r"\1\2", lowered)  # "40 GB" -> "40gb"
    out: list[str] = []
    for token in re.findall(r"[a-z0-9]+", lowered):
        if token in _NOISE_TOKENS:
            continue
        out.append("sxm" if _SXM_TOKEN.match(token) else token)
    return out


def _parse(text: str, drop: frozenset[str] = frozenset()) -> _Parsed:
    base: list[str] = []
    memory_gb: int | None = None
    for token in _tokens(text):
        match = _MEMORY_TOKEN.match(token)
        if match:
            memory_gb = int(match.group(1))
        elif token not in drop:
            base.append(token)
    return _Parsed(base="".join(base), memory_gb=memory_gb)


def _key(parsed: _Parsed) -> tuple[str, int | None]:
    return (parsed.base, parsed.memory_gb)


def _display_key(parsed: _Parsed) -> str:
    return parsed.base if parsed.memory_gb is None else f"{parsed.base}{parsed.memory_gb}gb"


@functools.lru_cache(maxsize=1)
def _index() -> dict[tuple[str, int | None], GpuCatalogEntry]:
    return {
        _key(_parse(spelling)): entry
        for entry in gpu_catalog()
        for spelling in (entry.name, *entry.aliases)
    }


def _memory_matches(entry: GpuCatalogEntry, memory_gb: int) -> bool:
    if memory_gb == entry.nominal_memory_gb:
        return True
    actual_gb = entry.spec.memory_bytes / _GIB
    return abs(memory_gb - actual_gb) <= _MEMORY_TOLERANCE * actual_gb


# --------------------------------------------------------------------------- lookups


def find_gpu(text: str) -> GpuSpec:
    """The catalog GPU that `text` names.

    Case-insensitive; `-`, `_`, spaces and vendor words (NVIDIA, GeForce, Tesla)
    are ignored, `sxm4`/`sxm5` read as `sxm`, and a memory size (`40GB`, `40g`)
    may be added: `A100-40GB`, `a100_40g`, `A100 80GB`, `h100-sxm`, `4090`,
    `rtx4090` all work. Raises PlannerInputError naming close matches otherwise.
    """
    if not text.strip():
        raise PlannerInputError(
            "GPU name is empty; `tuneboard gpus` lists the known GPUs (e.g. A100-80GB, H100)"
        )
    parsed = _parse(text)
    index = _index()
    entry = index.get(_key(parsed))
    if entry is not None:
        return entry.spec
    if parsed.memory_gb is not None:
        family = index.get((parsed.base, None))
        if family is not None:
            if _memory_matches(family, parsed.memory_gb):
                return family.spec
            raise PlannerInputError(
                f"unknown GPU {text!r}: {family.name} has {family.nominal_memory_gb} GB, not "
                f"{parsed.memory_gb} GB{_suggestion_tail(parsed)}"
            )
    raise PlannerInputError(f"unknown GPU {text!r}{_suggestion_tail(parsed)}")


def _suggestion_tail(parsed: _Parsed) -> str:
    names = _suggest(parsed)
    listing = "`tuneboard gpus` lists all known GPUs"
    if names:
        return f"; did you mean {', '.join(names)}? ({listing})"
    return f" ({listing})"


def _suggest(parsed: _Parsed, limit: int = 5) -> list[str]:
    """Catalog names close to `parsed`: the same family first ("h100nvl" -> H100-SXM,
    H100-PCIe), else spelling neighbours (difflib)."""
    family: list[tuple[bool, str]] = []
    if len(parsed.base) >= 2:
        for entry in gpu_catalog():
            entry_base = _parse(entry.name, drop=frozenset({"sxm", "pcie"})).base
            if entry_base in parsed.base or parsed.base in entry_base:
                family.append((entry_base != parsed.base, entry.name))
    if family:
        return [name for _, name in sorted(family, key=lambda item: item[0])][:limit]
    by_key: dict[str, str] = {}
    for entry in gpu_catalog():
        for spelling in (entry.name, *entry.aliases):
            by_key.setdefault(_display_key(_parse(spelling)), entry.name)
    names: list[str] = []
    for key in difflib.get_close_matches(_display_key(parsed), list(by_key), n=12, cutoff=0.5):
        if by_key[key] not in names:
            names.append(by_key[key])
    return names[:3]


def gpu_from_nvml_name(nvml_name: str, memory_bytes: int) -> GpuSpec | None:
    """The catalog entry for a GPU as NVML names it, with NVML's memory total.

    `nvml_name` is what `nvmlDeviceGetName` returns ("NVIDIA A800-SXM4-80GB",
    "NVIDIA H100 80GB HBM3", "Tesla V100-SXM2-32GB", "NVIDIA GeForce RTX 4090");
    `memory_bytes` is `nvmlDeviceGetMemoryInfo(...).total`, which replaces the
    catalog's figure and picks between sizes (A100 40GB / 80GB). A PCIe board
    whose catalog entry is the SXM part ("Tesla V100-PCIE-32GB", "NVIDIA H800
    PCIe") gets that entry without NVLink. None when no entry fits (e.g. "NVIDIA
    A10G", "NVIDIA H100 NVL" 94GB, MIG devices).
    """
    if memory_bytes <= 0:
        raise ValueError(f"memory_bytes must be positive, got {memory_bytes}")
    tokens = set(_tokens(nvml_name))
    is_pcie = bool(tokens & _NVML_PCIE_TOKENS)
    form_words = frozenset({"sxm"}) | _NVML_PCIE_TOKENS | _NVML_NOISE_TOKENS
    parsed = _parse(nvml_name, drop=form_words)
    if not parsed.base:
        return None
    memory_gb = memory_bytes / _GIB
    candidates = [
        entry
        for entry in gpu_catalog()
        if _parse(entry.name, drop=form_words).base == parsed.base
        and abs(entry.spec.memory_bytes / _GIB - memory_gb)
        <= _MEMORY_TOLERANCE * entry.spec.memory_bytes / _GIB
    ]
    if not candidates:
        return None

    def rank(entry: GpuCatalogEntry) -> tuple[bool, float]:
        form_mismatch = (entry.form_factor == "pcie") != is_pcie
        return (form_mismatch, abs(entry.spec.memory_bytes - memory_bytes))

    best = min(candidates, key=rank)
    spec = replace(best.spec, memory_bytes=memory_bytes)
    if is_pcie and best.form_factor != "pcie":
        spec = replace(spec, nvlink_bytes_per_s=None)
    return spec
