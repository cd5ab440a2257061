"""Which files a job needs on its nodes, and copying them there over SFTP.

Paths in a recipe are relative to the job's working directory (recipes/schema/recipe.py). A
relative path that exists on the launching machine (relative to where `tuneboard launch`
runs) is copied to the same relative path under each node's workdir, unchanged files
skipped (size and mtime, as rsync's quick check). Everything else the job reads, an
absolute path or one that is not here, must already be on every node: preflight checks
it. With `shared_fs: true` nothing is copied (the workdir is one filesystem), only the
job's recipe, once. Models are never copied: put them on the nodes (or a shared disk).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from launcher.errors import LauncherInputError
from launcher.target import Target, local_path
from launcher.transport.base import Transport, node_path
from launcher.transport.fanout import NodePool, NodeResult
from recipes.schema import Recipe


@dataclass(frozen=True)
class SyncItem:
    local: Path
    #: Relative to the node's workdir.
    remote: str
    size_bytes: int


@dataclass(frozen=True)
class FilePlan:
    #: Copied to every node (none with shared_fs).
    items: tuple[SyncItem, ...]
    #: Read by the job but not copied: must exist on every node (relative to the workdir).
    on_nodes: tuple[str, ...]


@dataclass(frozen=True)
class SyncResult:
    copied: int
    unchanged: int
    bytes_copied: int


def recipe_paths(recipe: Recipe) -> list[tuple[str, str]]:
    """(key, path) of every file or folder the recipe reads, models aside."""
    out = [("data.train", p) for p in recipe.data.train_paths()]
    out += [("data.eval", p) for p in recipe.data.eval_paths()]
    template = recipe.data.chat_template
    if template is not None and template.endswith(".jinja"):
        out.append(("data.chat_template", template))
    if recipe.distributed.deepspeed_config is not None:
        out.append(("distributed.deepspeed_config", recipe.distributed.deepspeed_config))
    return out


def model_paths(recipe: Recipe) -> list[str]:
    """Model and tokenizer written as paths (not hub ids): they must be on the nodes."""
    found = []
    for value in (recipe.model.name, recipe.model.tokenizer):
        if recipe.model.tiny is None and value and value.startswith(("/", "./", "../", "~")):
            found.append(value)
    return found


def plan_files(recipe: Recipe, target: Target, base: Path) -> FilePlan:
    items: list[SyncItem] = []
    on_nodes: list[str] = list(model_paths(recipe))
    for key, path in recipe_paths(recipe):
        here = local_path(base, path)
        relative = not os.path.isabs(os.path.expanduser(path))
        if target.shared_fs or not relative or not here.exists():
            on_nodes.append(path)
            continue
        remote = posixpath.normpath(PurePosixPath(path).as_posix())
        if remote == ".." or remote.startswith("../"):
            raise LauncherInputError(
                f"{key} {path!r} is outside the job's working directory: copy it inside, "
                "or give an absolute path that exists on every node"
            )
        for file, rel in _walk(here, remote):
            items.append(SyncItem(file, rel, file.stat().st_size))
    return FilePlan(tuple(items), tuple(dict.fromkeys(on_nodes)))


def _walk(path: Path, remote: str) -> Iterator[tuple[Path, str]]:
    if path.is_file():
        yield path, remote
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(root) / name
            yield file, posixpath.join(remote, file.relative_to(path).as_posix())


def sync(
    pool: NodePool,
    files: FilePlan,
    workdirs: dict[str, str],
    extra: dict[str, tuple[tuple[Path, str], ...]],
) -> tuple[NodeResult[SyncResult], ...]:
    """Copy `files` (relative to each node's workdir) and each node's `extra` (local
    file, node path) to every node, all nodes at once."""

    def one(transport: Transport) -> SyncResult:
        name = transport.node.name
        workdir = node_path(workdirs[name])
        todo = [(i.local, posixpath.join(workdir, i.remote)) for i in files.items]
        todo += list(extra.get(name, ()))
        copied = unchanged = size = 0
        for local, remote in todo:
            if transport.upload(local, remote):
                copied += 1
                size += local.stat().st_size
            else:
                unchanged += 1
        return SyncResult(copied, unchanged, size)

    return pool.map(one)
