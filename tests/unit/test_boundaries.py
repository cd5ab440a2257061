"""The architecture's import rules (docs/architecture.md, ../shared/DESIGN.md), read
statically: every import of every module, at the top of a file or inside a function, so
that a function-level import cannot hide a breach. Each rule is also shown to fail: the
same check run on the project with one forbidden import added must report it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT
from tests.support.import_graph import Import, all_imports, cycles, project_sources

#: The training stack and the TUI: never on the path of `tuneboard plan` or the launcher.
HEAVY = frozenset(
    {"torch", "transformers", "peft", "trl", "deepspeed", "accelerate", "bitsandbytes"}
    | {"datasets", "textual"}
)
PROJECT = frozenset({"tuneboard", "planner", "launcher", "recipes", "benchmarks", "tests"})
MAX_LINES = 600


def top(name: str) -> str:
    return name.split(".", 1)[0]


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def runs_at_import(i: Import) -> bool:
    """At module level and not under `if TYPE_CHECKING:`."""
    return i.top_level and not i.type_only


def is_test_module(name: str) -> bool:
    return name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")


DASH_DATA = ("tuneboard.sources", "tuneboard.dash.state", "tuneboard.agent")
TRAINING = ("recipes.run", "recipes.train")
#: What the recipe format may import besides the standard library and itself.
SCHEMA_MAY_IMPORT = ("pydantic", "yaml", "planner.errors")


@dataclass(frozen=True)
class Rule:
    name: str
    #: True when the import breaks the rule.
    broken: Callable[[Import], bool]


RULES = (
    Rule(
        "planner/ imports none of tuneboard, launcher, recipes, benchmarks, tests",
        lambda i: i.source.startswith("planner") and top(i.target) in PROJECT - {"planner"},
    ),
    Rule(
        "planner/ never imports textual; the training stack only inside a function",
        lambda i: (
            under(i.source, "planner")
            and (
                top(i.target) == "textual"
                or (top(i.target) in HEAVY and i.top_level and not i.type_only)
            )
        ),
    ),
    Rule(
        "launcher/ never imports the dashboard (tuneboard), textual or the training stack",
        lambda i: under(i.source, "launcher") and top(i.target) in HEAVY | {"tuneboard"},
    ),
    Rule(
        "launcher/ uses recipes only through the recipe format (recipes.schema)",
        lambda i: (
            under(i.source, "launcher")
            and top(i.target) == "recipes"
            and not under(i.target, "recipes.schema")
        ),
    ),
    Rule(
        "the recipe format (recipes.schema) imports only the standard library, pydantic, "
        "PyYAML and the user-input error",
        lambda i: (
            under(i.source, "recipes.schema")
            and not under(i.target, "recipes.schema", *SCHEMA_MAY_IMPORT)
            and top(i.target) not in sys.stdlib_module_names
        ),
    ),
    Rule(
        "training (recipes.run, recipes.train) never imports the launcher or the TUI",
        lambda i: (
            under(i.source, *TRAINING) and (top(i.target) in {"launcher", "tuneboard", "textual"})
        ),
    ),
    Rule(
        "the dashboard's data side (sources/, dash/state.py, the agent) never imports textual "
        "or the dashboard's screens",
        lambda i: (
            under(i.source, *DASH_DATA)
            and (
                top(i.target) == "textual"
                or (
                    under(i.target, "tuneboard.dash")
                    and not under(i.target, "tuneboard.dash.state")
                )
            )
        ),
    ),
    Rule(
        "the CLI's modules import the training stack and textual only inside a function",
        lambda i: (
            under(i.source, "tuneboard")
            and not under(i.source, "tuneboard.dash")
            and i.top_level
            and top(i.target) in HEAVY
        ),
    ),
    Rule(
        "product code (tuneboard, planner, launcher, recipes) never imports tests or benchmarks",
        lambda i: (
            top(i.source) in {"tuneboard", "planner", "launcher", "recipes"}
            and top(i.target) in {"tests", "benchmarks"}
        ),
    ),
    Rule(
        "no test imports a benchmark; benchmarks import only tests.support from tests",
        lambda i: (
            (top(i.source) == "tests" and top(i.target) == "benchmarks")
            or (
                top(i.source) == "benchmarks"
                and top(i.target) == "tests"
                and not under(i.target, "tests.support", "tests.conftest")
            )
        ),
    ),
    Rule(
        "no module imports a test module (shared helpers live in tests/support/)",
        lambda i: is_test_module(i.target),
    ),
)


def violations(sources: Mapping[str, str]) -> list[str]:
    imports = all_imports(sources)
    found = [f"{rule.name}: {i.where()}" for rule in RULES for i in imports if rule.broken(i)]
    found += [f"import cycle: {' -> '.join(group)}" for group in cycles(imports, sources)]
    found += [
        f"{name}: {text.count(chr(10))} lines (split it: at most {MAX_LINES})"
        for name, text in sources.items()
        if text.count("\n") > MAX_LINES
    ]
    return found


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return project_sources(ROOT)


def test_the_project_keeps_every_rule(sources: dict[str, str]) -> None:
    assert len(sources) > 150  # the whole project was read, not an empty folder
    assert violations(sources) == []


def _with(sources: dict[str, str], module: str, code: str) -> dict[str, str]:
    assert module in sources, module
    return {**sources, module: sources[module] + "\n\n" + code + "\n"}


IN_FUNCTION = "def _added() -> None:\n    {}\n"

#: (module, code added to it, the rule it must break): one per rule, each import hidden
#: inside a function where a rule is about any import.
BREACHES = [
    ("planner.search", IN_FUNCTION.format("import launcher.cluster"), RULES[0]),
    ("planner.memory.breakdown", IN_FUNCTION.format("import textual"), RULES[1]),
    ("planner.search", "import torch", RULES[1]),
    ("launcher.job.launch", IN_FUNCTION.format("from tuneboard.dash import app"), RULES[2]),
    ("launcher.preflight.fit", IN_FUNCTION.format("import torch"), RULES[2]),
    ("launcher.job.sync", IN_FUNCTION.format("from recipes.train import sft"), RULES[3]),
    ("recipes.schema.rules", IN_FUNCTION.format("import torch"), RULES[4]),
    ("recipes.schema.recipe", "import launcher.errors", RULES[4]),
    ("recipes.train.session", IN_FUNCTION.format("import launcher.job.store"), RULES[5]),
    ("recipes.run", IN_FUNCTION.format("from tuneboard import output"), RULES[5]),
    ("tuneboard.sources.job_dir", IN_FUNCTION.format("import textual.app"), RULES[6]),
    ("tuneboard.dash.state", IN_FUNCTION.format("from textual.widget import Widget"), RULES[6]),
    ("tuneboard.sources.codec", IN_FUNCTION.format("import tuneboard.dash.app"), RULES[6]),
    ("tuneboard.cli_plan", "import textual", RULES[7]),
    ("launcher.cluster", IN_FUNCTION.format("import tests.support.sshd"), RULES[8]),
    ("tests.integration.test_launch", "import benchmarks.real_step", RULES[9]),
    ("benchmarks.launch_fanout", "import tests.integration.launch_helpers", RULES[9]),
    ("tests.integration.test_dash_agent", "from tests.unit import test_dash_app", RULES[10]),
]


@pytest.mark.parametrize(
    ("module", "code", "rule"), BREACHES, ids=[f"{m}+{c.split()[-1]}" for m, c, _ in BREACHES]
)
def test_each_rule_catches_an_added_import(
    sources: dict[str, str], module: str, code: str, rule: Rule
) -> None:
    found = violations(_with(sources, module, code))
    assert found and found[0].startswith(f"{rule.name}: {module}:"), found
    # the same import may also close a cycle (reported after the rules); nothing else
    assert all(v.startswith((rule.name, "import cycle: ")) for v in found), found


def test_every_rule_has_a_breach_that_it_catches() -> None:
    assert {rule.name for _, _, rule in BREACHES} == {rule.name for rule in RULES}


def test_a_cycle_hidden_in_functions_is_caught(sources: dict[str, str]) -> None:
    # launcher.cluster <- launcher.target already; the way back closes a cycle.
    found = violations(
        _with(sources, "launcher.cluster", IN_FUNCTION.format("import launcher.target"))
    )
    assert found == ["import cycle: launcher.cluster -> launcher.target"]


def test_a_module_past_the_line_limit_is_caught(sources: dict[str, str]) -> None:
    padding = "\n".join(f"X{i} = {i}" for i in range(MAX_LINES))
    found = violations(_with(sources, "planner.specs", padding))
    assert len(found) == 1 and found[0].startswith("planner.specs: ")


def _a_letter_apart(a: str, b: str) -> bool:
    """One insertion, deletion or substitution turns a into b (reward/rewards, tiny/tiny_)."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def look_alikes(modules: list[str]) -> list[tuple[str, str]]:
    by_package: dict[str, list[str]] = {}
    for name in modules:
        package, _, leaf = name.rpartition(".")
        by_package.setdefault(package, []).append(leaf)
    return [
        (f"{package}.{a}", f"{package}.{b}")
        for package, leaves in by_package.items()
        for i, a in enumerate(sorted(leaves))
        for b in sorted(leaves)[i + 1 :]
        if _a_letter_apart(a, b)
    ]


def test_no_two_modules_of_a_package_are_a_letter_apart(sources: dict[str, str]) -> None:
    assert look_alikes(list(sources)) == []
    # what the rule is for: the names this project once had
    assert look_alikes(
        ["recipes.reward", "recipes.rewards", "planner.trace", "planner.traced"]
    ) == [
        ("recipes.reward", "recipes.rewards"),
        ("planner.trace", "planner.traced"),
    ]
