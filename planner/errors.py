"""The one exception type the planner raises for bad user input."""

from __future__ import annotations


class PlannerInputError(ValueError):
    """Bad user input. The message names the bad value and what would be accepted.

    The CLI prints it as one line and exits with code 2; it is never a traceback.
    """
