"""Turn pydantic's validation errors into one line per bad key, in the user's words.

Each line names the key as the user wrote it (an alias like `lora_rank` is named too),
suggests the closest accepted key for an unknown one (in the same section, or the section
where that key lives), and the closest accepted value for a misspelled choice.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from recipes.schema.aliases import ALIASES, FOREIGN_HINTS, SCOPED_ALIASES, Path_


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The BaseModel inside `X`, `X | None` or `list[X]`, and whether it was a list."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model, is_list = _model_of(arg)
            if model is not None:
                return model, is_list
        return None, False
    if origin is list:
        args = typing.get_args(annotation)
        model, _ = _model_of(args[0]) if args else (None, False)
        return model, model is not None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def section_fields(root: type[BaseModel]) -> dict[Path_, frozenset[str]]:
    """Every section (a nested model, not a list item) by path, with its field names."""
    out: dict[Path_, frozenset[str]] = {}

    def visit(model: type[BaseModel], path: Path_) -> None:
        out[path] = frozenset(model.model_fields)
        for name, info in model.model_fields.items():
            sub, is_list = _model_of(info.annotation)
            if sub is not None and not is_list:
                visit(sub, (*path, name))

    visit(root, ())
    return out


def _all_fields(root: type[BaseModel]) -> dict[str, list[str]]:
    """Field name -> the dotted places it lives (for 'did you mean section.key?')."""
    places: dict[str, list[str]] = {}

    def visit(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, info in model.model_fields.items():
            places.setdefault(name, []).append(".".join((*path, name)))
            sub, _ = _model_of(info.annotation)
            if sub is not None:
                visit(sub, (*path, name))

    visit(root, ())
    return places


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel], Path_, list[str]]:
    """Follow loc through the models: (deepest model, its path, the printable key parts)."""
    model: type[BaseModel] = root
    path: list[str] = []
    shown: list[str] = []
    i = 0
    while i < len(loc):
        part = loc[i]
        info = model.model_fields.get(str(part))
        if info is None:
            break
        path.append(str(part))
        shown.append(str(part))
        sub, is_list = _model_of(info.annotation)
        i += 1
        if sub is None:
            break
        if is_list:
            if i < len(loc) and isinstance(loc[i], int):
                shown[-1] += f"[{loc[i]}]"
                i += 1
            else:
                break
        model = sub
    for part in loc[i:]:
        if isinstance(part, int):
            if shown:
                shown[-1] += f"[{part}]"
            else:
                shown.append(f"[{part}]")
        elif (
            isinstance(part, str)
            and re.fullmatch(r"[A-Za-z_]\w*", part)
            and part
            not in (
                "str",
                "int",
                "float",
                "bool",
                "list",
                "dict",
                "none",
            )
        ):
            shown.append(part)
    return model, tuple(path), shown


def _suggest_key(root: type[BaseModel], model: type[BaseModel], where: Path_, key: str) -> str:
    if key in FOREIGN_HINTS:
        return f": {FOREIGN_HINTS[key]}"
    local = list(model.model_fields) + list(SCOPED_ALIASES.get(where, {}))
    close = difflib.get_close_matches(key, local, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    places = _all_fields(root).get(key)
    if places:
        return f" (it belongs in {places[0]!r})"
    close = difflib.get_close_matches(key, list(ALIASES), n=1, cutoff=0.75)
    if close:
        alias = ALIASES[close[0]]
        return f" (did you mean {close[0]!r}, i.e. {alias.target_text}?)"
    everything = _all_fields(root)
    close = difflib.get_close_matches(key, list(everything), n=1)
    if close:
        return f" (did you mean {everything[close[0]][0]!r}?)"
    return ""


def _suggest_value(err: Any) -> str:
    if err["type"] != "literal_error":
        return ""
    expected = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
    close = difflib.get_close_matches(str(err.get("input")), expected, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_validation_error(
    exc: ValidationError,
    source: str,
    root: type[BaseModel],
    written_as: dict[Path_, str] | None = None,
) -> str:
    """One line per bad key: `source: key: what is wrong (got value)`."""
    written_as = written_as or {}
    merged: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            model, where, shown = _walk(root, loc[:-1])
            key = ".".join([*shown, str(loc[-1])])
            known = ", ".join(model.model_fields)
            hint = _suggest_key(root, model, where, str(loc[-1]))
            merged.setdefault(key, []).append(f"unknown key{hint}; accepted here: {known}")
            continue
        model, where, shown = _walk(root, loc)
        key = ".".join(shown) or "(top level)"
        alias = written_as.get(where)
        if alias and alias != ".".join(where):
            key = f"{key} (written as {alias!r})"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            merged.setdefault(key, []).append("missing (required)")
            continue
        merged.setdefault(key, []).append(msg + _suggest_value(err))
        if not isinstance(err.get("input"), dict):
            got[key] = f" (got {err.get('input')!r})"
    lines = []
    for key, msgs in merged.items():
        unique = list(dict.fromkeys(msgs))
        prefix = f"{source}: " if key == "(top level)" else f"{source}: {key}: "
        lines.append(prefix + " or ".join(unique) + got.get(key, ""))
    return "\n".join(lines)
