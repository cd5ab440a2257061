"""Line plots in braille characters (2 × 4 dots per cell). Rich text, no textual.

Each series is resampled onto the plot's pixel columns: a column covers a range of data
points and draws every dot between their lowest and highest value, joined to the column
before, so a noisy series shows its band and a smooth one a continuous line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


@dataclass(frozen=True)
class Series:
    values: Sequence[float | None]
    style: str


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def column_ranges(values: Sequence[float | None], columns: int) -> list[tuple[float, float] | None]:
    """Per pixel column, (low, high) of the series over the data it covers."""
    n = len(values)
    out: list[tuple[float, float] | None] = [None] * columns
    if n == 0 or columns == 0:
        return out
    if n == 1:
        v = values[0]
        if v is not None and math.isfinite(v):
            out[0] = (v, v)
        return out

    def at(pos: float) -> float | None:
        i = int(pos)
        if i >= n - 1:
            v = values[n - 1]
            return v if _finite(v) else None
        a, b = values[i], values[i + 1]
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            return a if a is not None and math.isfinite(a) else None
        return a + (b - a) * (pos - i)

    span = (n - 1) / columns
    for c in range(columns):
        lo_pos, hi_pos = c * span, (c + 1) * span
        found = [v for v in (at(lo_pos), at(hi_pos)) if v is not None]
        for i in range(math.ceil(lo_pos), min(n, math.floor(hi_pos) + 1)):
            v = values[i]
            if v is not None and math.isfinite(v):
                found.append(v)
        if found:
            out[c] = (min(found), max(found))
    return out


def value_range(series: Sequence[Series]) -> tuple[float, float] | None:
    finite = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.05 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.04
    return lo - pad, hi + pad


def plot(
    series: Sequence[Series], width: int, height: int, y_range: tuple[float, float]
) -> list[Text]:
    """`height` lines of `width` braille cells; later series draw over earlier ones."""
    width, height = max(1, width), max(1, height)
    px_w, px_h = width * 2, height * 4
    lo, hi = y_range
    scale = (px_h - 1) / (hi - lo) if hi > lo else 0.0
    bits = [[0] * width for _ in range(height)]
    owner: list[list[int]] = [[-1] * width for _ in range(height)]

    def row_of(v: float) -> int:
        return max(0, min(px_h - 1, px_h - 1 - round((v - lo) * scale)))

    for si, s in enumerate(series):
        for x, rng in enumerate(column_ranges(s.values, px_w)):
            if rng is None:
                continue
            top, bottom = row_of(rng[1]), row_of(rng[0])
            cx, bx = divmod(x, 2)
            for y in range(top, bottom + 1):
                cy, by = divmod(y, 4)
                bits[cy][cx] |= _BITS[by][bx]
                owner[cy][cx] = si
    lines = []
    for cy in range(height):
        text = Text()
        run, run_owner = "", -2
        for cx in range(width):
            b, o = bits[cy][cx], owner[cy][cx]
            if o != run_owner and run:
                text.append(run, style=series[run_owner].style if run_owner >= 0 else "")
                run = ""
            run_owner = o
            run += chr(0x2800 + b) if b else " "
        if run:
            text.append(run, style=series[run_owner].style if run_owner >= 0 else "")
        lines.append(text)
    return lines
