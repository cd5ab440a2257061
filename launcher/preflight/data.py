"""Preflight's data check: the recipe's data, where the job will read it, before anything starts.

`python -m recipes.run - --check-data` (recipes/train/data_check.py: the files are there and
readable, in the format they claim, and the sampled rows fit the task; standard library
only, no torch) is run with the recipe on stdin:

- here, in the launch directory, when data.train is copied from this machine to the nodes
  (launcher/job/sync.py): what is checked here is what every node will get;
- else on the master node, in its workdir, by the recipe's python (a shared filesystem, an
  absolute path, a local job): what rank 0 will read.

Data files found in the other place (an eval file on the nodes while the train file is copied
from here) are left to the `files` check. The result is one `data` check on the master.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import sys
from pathlib import Path

from launcher.errors import LauncherError
from launcher.job.sync import FilePlan
from launcher.preflight.checks import Check, PreflightReport
from launcher.target import Target
from launcher.transport.base import Transport, node_path
from launcher.transport.fanout import NodePool
from launcher.transport.local import LocalTransport
from recipes.schema import Recipe, dump_recipe

#: A data check reads the row count of every file: generous, but a check must end.
DATA_CHECK_TIMEOUT_S = 120.0
CHECK_PROGRAM = ("-m", "recipes.run", "-", "--check-data")
#: recipes.run's exit code for a recipe or data that cannot train.
EXIT_BAD_DATA = 2


def checked_here(recipe: Recipe, files: FilePlan) -> bool:
    """Whether data.train is copied from this machine (so it is checked here)."""
    return not any(p in files.on_nodes for p in recipe.data.train_paths())


def recipe_for_check(
    recipe: Recipe, files: FilePlan, *, here: bool, workdir: str | None = None
) -> Recipe:
    """The recipe with only the data paths found in the place checked; relative ones under
    `workdir` when given (the check runs in the login directory: the workdir may not exist
    before the first job, while an absolute data path can)."""

    def keep(paths: list[str]) -> list[str] | None:
        kept = [p for p in paths if (p not in files.on_nodes) == here]
        if workdir is not None:
            kept = [p if p.startswith(("/", "~")) else posixpath.join(workdir, p) for p in kept]
        return kept or None

    data = recipe.data.model_copy(
        update={"train": keep(recipe.data.train_paths()), "eval": keep(recipe.data.eval_paths())}
    )
    return recipe.model_copy(update={"data": data})


def with_data_check(
    report: PreflightReport,
    recipe: Recipe,
    files: FilePlan,
    target: Target,
    pool: NodePool,
    cwd: Path,
) -> PreflightReport:
    """The report with the `data` check added to the master's checks."""
    master = report.nodes[0]
    failed = [c.name for c in master.checks if c.status == "fail"]
    if not checked_here(recipe, files) and {"ssh", "python", "packages", "files"} & set(failed):
        check = Check("data", "skip", "not checked: the master failed " + ", ".join(failed))
    else:
        transport = pool.transports.get(master.node.name)
        check = data_check(recipe, files, target, transport, cwd)
    nodes = (dataclasses.replace(master, checks=(*master.checks, check)), *report.nodes[1:])
    return dataclasses.replace(report, nodes=nodes)


def data_check(
    recipe: Recipe, files: FilePlan, target: Target, master: Transport | None, cwd: Path
) -> Check:
    """The `data` check: here or on the master (None: the master is not reachable)."""
    here = checked_here(recipe, files)
    if here:
        transport: Transport = LocalTransport()
        python, cwd_there, where = sys.executable, str(cwd.resolve()), "here"
        checked = recipe_for_check(recipe, files, here=True)
    elif master is None:
        return Check("data", "skip", "not checked: the master is not reachable")
    else:
        transport, python, cwd_there = master, target.python, None
        where = "here" if master.node.local else f"on {master.node.name}"
        workdir = node_path(target.workdir_of(0))
        checked = recipe_for_check(recipe, files, here=False, workdir=workdir)
    text = dump_recipe(checked).encode()
    try:
        result = transport.run(
            [python, *CHECK_PROGRAM],
            cwd=cwd_there,
            stdin=text,
            timeout_s=DATA_CHECK_TIMEOUT_S,
        )
    except LauncherError as err:
        return Check("data", "warn", f"not checked {where}: {err}", "unchecked")
    if result.ok:
        summary = (result.stdout.strip().splitlines() or ["ok"])[-1]
        rows = [int(n) for n in re.findall(r"(\d+) rows\)", summary)]
        short = f"{sum(rows)} rows" if rows else "ok"
        return Check("data", "ok", f"{summary} (checked {where})", short)
    last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
    last = last.removeprefix("error: ")
    if result.returncode == EXIT_BAD_DATA:
        return Check("data", "fail", f"{last} (checked {where})", "bad data")
    return Check("data", "warn", f"could not check the data {where}: {last}", "unchecked")
