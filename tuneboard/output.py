"""The CLI's one output sink: data goes out as JSON (`--json`) or through a rich renderer."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        _console = Console(highlight=False)
    return _console


def error_console() -> Console:
    return Console(stderr=True, highlight=False)


def emit(data: Any, as_json: bool, render: Callable[[Console], None]) -> None:
    """Print `data` as JSON, or call `render` with the console."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()
    else:
        render(console())
