"""What to give for a required argument or option, by parameter name: tuneboard.cli's
message for a missing one, and the commands that check a parameter themselves."""

from __future__ import annotations

#: What to give for a required argument or option, by parameter name; one without an
#: entry here is described by its own --help text.
MISSING_HINTS: dict[str, str] = {
    "job": "give a job id, a unique prefix of it, or 'latest' (see tuneboard jobs)",
    "model": "a catalog name (tuneboard models), a config.json or its folder, an HF id, "
    "or a size like 7b",
    "recipe": "give a recipe YAML file (recipes/configs/ has examples; "
    "tuneboard plan --write recipe.yaml writes one)",
}
