"""Every import in the project, read statically (ast), with where it sits.

Used by tests/unit/test_boundaries.py: because the source is parsed, not imported, an
import inside a function (how heavy libraries are kept off the CLI's start-up path) is
seen exactly like one at the top of the file, so a function-level import cannot hide a
breach of the architecture (docs/architecture.md).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: The project's own top-level packages (what the rules are about).
PACKAGES = ("tuneboard", "planner", "launcher", "recipes", "benchmarks", "tests")


@dataclass(frozen=True)
class Import:
    #: The importing module, dotted (`launcher.job.launch`).
    source: str
    #: The imported module, dotted; for `from pkg import name`, `pkg.name` when that is
    #: a module of the project, else `pkg`.
    target: str
    line: int
    #: At module level (runs on import), not inside a function or class body.
    top_level: bool
    #: Inside `if TYPE_CHECKING:` (never runs).
    type_only: bool

    def where(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_sources(root: Path) -> dict[str, str]:
    """{dotted module name: source} for every .py file of the project's packages."""
    out: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if ".venv" in path.parts or "__snapshots__" in path.parts:
                continue
            out[module_name(root, path)] = path.read_text(encoding="utf-8")
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """`from ..x import y` inside `module` -> absolute `pkg.x` (PEP 328)."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(module: str, source: str, modules: Iterable[str]) -> list[Import]:
    known = set(modules)
    is_package = f"{module}.__init__" in known or any(m.startswith(module + ".") for m in known)
    found: list[Import] = []

    def visit(node: ast.AST, top: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.body:
                    visit_one(sub, top, True)
                for sub in child.orelse:
                    visit_one(sub, top, type_only)
                continue
            visit_one(child, top, type_only)

    def visit_one(child: ast.AST, top: bool, type_only: bool) -> None:
        if isinstance(child, ast.Import):
            for alias in child.names:
                found.append(Import(module, alias.name, child.lineno, top, type_only))
        elif isinstance(child, ast.ImportFrom):
            base = _resolve(module, is_package, child.level, child.module)
            for alias in child.names:
                full = f"{base}.{alias.name}"
                target = full if full in known else base
                found.append(Import(module, target, child.lineno, top, type_only))
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            visit(child, False, type_only)
        elif isinstance(child, ast.ClassDef):
            visit(child, top, type_only)  # a class body runs at import
        else:
            visit(child, top, type_only)

    visit(ast.parse(source), True, False)
    return found


@lru_cache(maxsize=4096)
def _imports_cached(module: str, source: str, modules: frozenset[str]) -> tuple[Import, ...]:
    return tuple(imports_of(module, source, modules))


def all_imports(sources: Mapping[str, str]) -> list[Import]:
    modules = frozenset(sources)
    return [i for name, src in sources.items() for i in _imports_cached(name, src, modules)]


def cycles(imports: Iterable[Import], modules: Iterable[str]) -> list[list[str]]:
    """Strongly connected groups of more than one module in the import graph of the
    project's own modules (imports that run: `TYPE_CHECKING` ones are left out).
    Importing `a.b.c` also runs `a` and `a.b`, but a package's `__init__` importing
    its own submodule is not a cycle, so only the named module is an edge."""
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in known}
    for imp in imports:
        if not imp.type_only and imp.target in known and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups
