"""The one user-input error type, at the bottom of the import graph, and the planner's own.

`UserInputError` is bad input from the person at the keyboard: a flag, a recipe key, a
file, a job id. Its message names the bad value and what would be accepted. Every layer
raises it or its own subclass (`PlannerInputError` here, `launcher.errors.LauncherInputError`,
`recipes.schema.RecipeError`, `recipes.train.data_check.DataError`), and exactly one place,
`tuneboard.cli.main`, turns it into `error: <message>` and exit code 2: never a traceback.
It lives in planner/ because the planner imports nothing of the others, so every package
can import it without breaking the arrows of docs/architecture.md.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad user input; the message names the bad value and what would be accepted."""


class PlannerInputError(UserInputError):
    """Bad input to the planner: a model, a GPU string, a constraint that cannot hold."""
