"""A DataTable kept in sync with a list of keyed rows: only changed cells are touched.

When the columns or the order of row keys change, the table is rebuilt; otherwise each
row is updated by key, cell by cell, and only where the cell differs from what is shown.
Call `sync` inside `app.batch_update()` so the changes paint once.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.widgets import DataTable

from tuneboard.dash.table_model import Cell, Column, Row


class KeyedTable(DataTable[Cell]):
    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._columns_sig: tuple[Column, ...] = ()
        self._order: list[str] = []
        self._shown: dict[str, tuple[Cell, ...]] = {}
        self.rebuilds = 0
        self.cell_updates = 0

    def sync(self, columns: Sequence[Column], rows: Sequence[Row]) -> None:
        sig = tuple(columns)
        order = [r.key for r in rows]
        if sig != self._columns_sig or order != self._order:
            self._rebuild(sig, rows)
            return
        for row in rows:
            shown = self._shown[row.key]
            if shown == row.cells:
                continue
            for col, old, new in zip(columns, shown, row.cells, strict=True):
                if old != new:
                    self.update_cell(row.key, col.key, new)
                    self.cell_updates += 1
            self._shown[row.key] = row.cells

    def _rebuild(self, columns: tuple[Column, ...], rows: Sequence[Row]) -> None:
        cursor_key = self._key_at_cursor()
        self.rebuilds += 1
        self.clear(columns=columns != self._columns_sig)
        if columns != self._columns_sig:
            for col in columns:
                self.add_column(col.label, width=col.width, key=col.key)
        for row in rows:
            self.add_row(*row.cells, key=row.key)
        self._columns_sig = columns
        self._order = [r.key for r in rows]
        self._shown = {r.key: r.cells for r in rows}
        if cursor_key in self._shown:
            self.move_cursor(row=self.get_row_index(cursor_key))

    def _key_at_cursor(self) -> str | None:
        if not self._order or not 0 <= self.cursor_row < len(self._order):
            return None
        return self._order[self.cursor_row]

    def key_at_cursor(self) -> str | None:
        return self._key_at_cursor()
