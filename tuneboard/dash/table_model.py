"""Columns and keyed rows for `KeyedTable`. Rich text cells, no textual."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

Cell = str | Text


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int


@dataclass(frozen=True)
class Row:
    key: str
    cells: tuple[Cell, ...]
