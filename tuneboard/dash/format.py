"""Cell text for the dashboard. None (not available) becomes "–" here, and only here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

MISSING = "–"
GIB = 1 << 30
_BLOCKS = "▁▂▃▄▅▆▇█"
_BAR = " ▏▎▍▌▋▊▉█"


def percent(value: float | None, digits: int = 0) -> str:
    return MISSING if value is None else f"{value:.{digits}f}%"


def gib(value: int | float | None, digits: int = 1) -> str:
    return MISSING if value is None else f"{value / GIB:.{digits}f}"


def memory(used: int | None, total: int | None, digits: int = 1) -> str:
    """`61.2/80G` (GiB)."""
    if used is None and total is None:
        return MISSING
    return f"{gib(used, digits)}/{gib(total, 0)}G"


def watts(power_mw: float | None, limit_mw: float | None = None) -> str:
    if power_mw is None:
        return MISSING
    if limit_mw is None:
        return f"{power_mw / 1000:.0f}W"
    return f"{power_mw / 1000:.0f}/{limit_mw / 1000:.0f}W"


def celsius(value: float | None) -> str:
    return MISSING if value is None else f"{value:.0f}°C"


def mhz(value: float | None) -> str:
    return MISSING if value is None else f"{value:.0f}"


def rate(value: float | None) -> str:
    """Bytes per second, tokens per second: 950, 11.2k, 3.40M."""
    if value is None or not math.isfinite(value):
        return MISSING
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def number(value: float | None, fmt: str = ".4g") -> str:
    if value is None:
        return MISSING
    if math.isnan(value):
        return "NaN"
    return format(value, fmt)


def duration(seconds: float | None) -> str:
    """12s, 4m05s, 2h07m, 3d04h."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return MISSING
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def sparkline(
    values: Iterable[float | None], width: int, top: float = 100.0, bottom: float = 0.0
) -> str:
    """The last `width` values as block characters, bottom..top; a gap (None) is a space."""
    tail = list(values)[-width:]
    span = top - bottom
    chars = []
    for v in tail:
        if v is None or not math.isfinite(v):
            chars.append(" ")
        else:
            frac = (v - bottom) / span if span > 0 else 0.5
            chars.append(_BLOCKS[round(max(0.0, min(1.0, frac)) * (len(_BLOCKS) - 1))])
    return "".join(chars).rjust(width)


def bar(fraction: float | None, width: int) -> str:
    """A horizontal bar in eighths of a cell."""
    if fraction is None:
        return " " * width
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_BAR[part] if part else "")
    return text.ljust(width)


def mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
