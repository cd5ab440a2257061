"""The built-in model catalog (planner/data/models.json): a name, its aliases and HF id,
and the model's `config.json`, turned into a `ModelSpec` by planner/hf_config.py.

Lookups are forgiving about case and separators ('Qwen2_5-7B' finds qwen2.5-7b) and
refuse an ambiguous name with a message that lists the candidates.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from planner.errors import PlannerInputError
from planner.hf_config import spec_from_hf_config
from planner.specs import ModelSpec

__all__ = ["CatalogEntry", "find_catalog_entry", "load_catalog"]


@dataclass(frozen=True)
class CatalogEntry:
    """One model of planner/data/models.json. `config` is a read-only view."""

    name: str
    aliases: tuple[str, ...]
    hf_id: str | None
    config: Mapping[str, Any]
    note: str | None

    def to_spec(self) -> ModelSpec:
        """The entry as a `ModelSpec` (source "catalog")."""
        return spec_from_hf_config(
            self.config, name=self.name, source="catalog", hf_id=self.hf_id, note=self.note
        )

    def config_dict(self) -> dict[str, Any]:
        """A deep, mutable copy of `config` (e.g. for `AutoConfig.for_model(**...)`)."""
        return copy.deepcopy(dict(self.config))


_CATALOG_FILE = "models.json"
_SEPARATORS = re.compile(r"[-_.\s]+")


def _key(text: str) -> str:
    """Lower-case; runs of '-', '_', '.' and blanks become one '-' ('Qwen2_5-7B' ~ 'qwen2.5-7b')."""
    return _SEPARATORS.sub("-", text.strip().casefold()).strip("-")


def _loose_key(text: str) -> str:
    """`_key` without any separator ('llama27b' ~ 'llama-2-7b'); used only when unambiguous."""
    return _key(text).replace("-", "")


def _str_list(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: 'aliases' must be a list of strings")
    return tuple(value)


def _optional_str(value: object, where: str, key: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: {key!r} must be a string or null")
    return value


def _parse_catalog(raw: object) -> tuple[CatalogEntry, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"planner/data/{_CATALOG_FILE}: expected a JSON list of models")
    entries: list[CatalogEntry] = []
    for i, item in enumerate(raw):
        where = f"planner/data/{_CATALOG_FILE}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"{where}: expected an object with a string 'name'")
        config = item.get("config")
        if not isinstance(config, dict):
            raise ValueError(f"{where}: 'config' must be an object")
        entries.append(
            CatalogEntry(
                name=item["name"],
                aliases=_str_list(item.get("aliases", []), where),
                hf_id=_optional_str(item.get("hf_id"), where, "hf_id"),
                config=MappingProxyType(copy.deepcopy(config)),
                note=_optional_str(item.get("note"), where, "note"),
            )
        )
    return tuple(entries)


@lru_cache(maxsize=1)
def _catalog() -> tuple[CatalogEntry, ...]:
    text = (
        resources.files("planner")
        .joinpath("data")
        .joinpath(_CATALOG_FILE)
        .read_text(encoding="utf-8")
    )
    return _parse_catalog(json.loads(text))


def _spellings(entry: CatalogEntry) -> list[str]:
    return [entry.name, *entry.aliases, *([entry.hf_id] if entry.hf_id else [])]


@lru_cache(maxsize=1)
def _index() -> tuple[Mapping[str, CatalogEntry], Mapping[str, tuple[CatalogEntry, ...]]]:
    """(strict key -> entry, loose key -> entries). A strict key shared by two entries is a bug."""
    strict: dict[str, CatalogEntry] = {}
    loose: dict[str, list[CatalogEntry]] = {}
    for entry in _catalog():
        for spelling in _spellings(entry):
            key = _key(spelling)
            other = strict.setdefault(key, entry)
            if other is not entry:
                raise ValueError(
                    f"planner/data/{_CATALOG_FILE}: {spelling!r} names both "
                    f"{other.name!r} and {entry.name!r}"
                )
            matches = loose.setdefault(_loose_key(spelling), [])
            if entry not in matches:
                matches.append(entry)
    return MappingProxyType(strict), MappingProxyType({k: tuple(v) for k, v in loose.items()})


def load_catalog() -> list[CatalogEntry]:
    """Every entry of planner/data/models.json, in file order (parsed once, then cached)."""
    return list(_catalog())


def find_catalog_entry(text: str) -> CatalogEntry | None:
    """The catalog entry named `text` (its name, an alias or its HF id), or None.

    Case-insensitive; '-', '_', '.' and blanks are interchangeable ('Qwen2_5-7B'
    finds qwen2.5-7b). Failing that, separators are ignored altogether
    ('llama27b' finds llama-2-7b) as long as that names one entry only; when it
    names several (e.g. 'opt13b': opt-1.3b or opt-13b) a `PlannerInputError`
    lists them.
    """
    strict, loose = _index()
    found = strict.get(_key(text))
    if found is not None:
        return found
    candidates: Sequence[CatalogEntry] = loose.get(_loose_key(text), ())
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(entry.name for entry in candidates)
        raise PlannerInputError(f"model {text!r} is ambiguous: it could be {names}")
    return None
