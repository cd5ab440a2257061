"""The launch plan without any node: where a job runs, each node's torchrun command and
environment, the root cause of a failure, the planner's fit check, which files to copy."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launcher.cluster import Node
from launcher.errors import LauncherInputError
from launcher.job.root_cause import (
    Candidate,
    choose,
    error_line,
    is_consequence,
    parse_failures,
    unreported_errors,
    with_error,
)
from launcher.job.sync import plan_files
from launcher.job.torchrun import JobPlan, NodeJob, argv, environment, preview, split_rank
from launcher.preflight.fit import check_fit, model_spec, setup_for
from launcher.target import resolve_target, secrets_from
from planner.models import resolve_model
from recipes.schema import Recipe, parse_recipe

TINY_MODEL = {
    "name": "tiny",
    "tiny": {
        "config": {
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        }
    },
}


def recipe(**sections: Any) -> Recipe:
    return parse_recipe({"model": TINY_MODEL, **sections}, "test")


def two_nodes(**cluster: Any) -> Recipe:
    return recipe(
        cluster={
            "nodes": ["alice@10.0.0.1:2222", {"address": "10.0.0.2", "name": "b", "key": "~/k"}],
            **cluster,
        }
    )


# -- where the job runs ---------------------------------------------------------------------


def test_recipe_nodes_keep_ssh_config_in_force_unless_they_say_otherwise() -> None:
    target = resolve_target(two_nodes(gpus_per_node=4, python="/opt/py/bin/python"))
    a, b = target.cluster.nodes
    assert a == Node("10.0.0.1", port=2222, user="alice")
    assert b.port is None  # the schema's default 22 is not written: ~/.ssh/config may say
    assert (b.label, b.key) == ("b", Path.home() / "k")
    assert target.nproc_per_node == 4
    assert target.python == "/opt/py/bin/python"
    assert target.workdir_of(1) == "~/tuneboard" and not target.shared_fs


def test_processes_per_node_precedence(tmp_path: Path) -> None:
    assert resolve_target(two_nodes()).nproc_per_node is None  # from the GPUs found
    assert resolve_target(two_nodes(), cpu=True).nproc_per_node == 1
    hostfile = tmp_path / "hosts"
    hostfile.write_text("n1 slots=8\nn2 slots=8\n")
    assert resolve_target(two_nodes(gpus_per_node=4), hostfile=hostfile).nproc_per_node == 8
    assert resolve_target(two_nodes(), hostfile=hostfile, nproc_per_node=2).nproc_per_node == 2
    hostfile.write_text("n1 slots=8\nn2 slots=4\n")
    with pytest.raises(LauncherInputError, match="same slots="):
        resolve_target(two_nodes(), hostfile=hostfile)


def test_a_cluster_section_without_nodes_sets_the_hostfiles_python(tmp_path: Path) -> None:
    """With --hostfile, a recipe's cluster: may hold only how to run there."""
    hostfile = tmp_path / "hosts"
    hostfile.write_text("gpu1 slots=8\ngpu2 slots=8\n")
    settings = {"venv": "/opt/venv/", "workdir": "/data/tb", "shared_fs": True, "env": {"A": "1"}}
    target = resolve_target(recipe(cluster=settings), hostfile=hostfile)
    assert [n.host for n in target.cluster.nodes] == ["gpu1", "gpu2"]
    assert target.python == "/opt/venv/bin/python" and target.workdir == "/data/tb"
    assert target.shared_fs and target.env == (("A", "1"),)
    with pytest.raises(LauncherInputError, match=r"names no nodes: .* or give --hostfile"):
        resolve_target(recipe(cluster={"python": "/opt/py/bin/python"}))


def test_master_address_and_port() -> None:
    env = {"MASTER_ADDR": "10.1.0.1", "MASTER_PORT": "1", "NCCL_DEBUG": "INFO"}
    target = resolve_target(two_nodes(env=env, master_port=29600))
    assert (target.master_addr, target.master_port) == ("10.1.0.1", 29600)
    assert target.env == (("NCCL_DEBUG", "INFO"),)  # torchrun's own flags carry them
    flagged = resolve_target(two_nodes(env=env), master_addr="10.2.0.1", master_port=1234)
    assert (flagged.master_addr, flagged.master_port) == ("10.2.0.1", 1234)
    assert resolve_target(two_nodes()).master_addr is None  # the master's SSH address
    with pytest.raises(LauncherInputError, match="not a host name"):
        resolve_target(two_nodes(), master_addr="x; touch /tmp/pwned")


def test_no_cluster_is_the_local_machine(tmp_path: Path) -> None:
    target = resolve_target(recipe(), cpu=True, nproc_per_node=2, cwd=tmp_path)
    assert target.local and target.shared_fs
    assert target.workdir == str(tmp_path) and target.python == sys.executable
    assert target.master_addr == "127.0.0.1"


@pytest.mark.parametrize(
    ("workdir", "message"),
    [("/w/{node}", "unknown placeholder {node}"), ("~bob/w", "~user is not read")],
)
def test_bad_workdir(workdir: str, message: str) -> None:
    with pytest.raises(LauncherInputError, match=message):
        resolve_target(two_nodes(workdir=workdir))


def test_secrets_come_from_the_launchers_environment_only_when_set() -> None:
    environ = {"HF_TOKEN": "hf_x", "WANDB_API_KEY": "", "PATH": "/bin"}
    assert secrets_from(environ) == {"HF_TOKEN": "hf_x"}


# -- the command each node runs -------------------------------------------------------------


def plan(**changes: Any) -> JobPlan:
    nodes = tuple(
        NodeJob(Node(f"10.0.0.{i + 1}", label=f"n{i}"), i, 2, f"/w/{i}", "eth0") for i in range(2)
    )
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "marker": "tb-job-1",
        "nodes": nodes,
        "master_addr": "10.0.0.1",
        "master_port": 29500,
        "python": "/venv/bin/python",
        "env": (("NCCL_DEBUG", "WARN"), ("NOTE", "a b $HOME `x`")),
        "secret_names": ("HF_TOKEN",),
        "program": ("-m", "recipes.run"),
        "recipe_name": "r.yaml",
        "overrides": ("training.lr=1e-4",),
        "cpu": False,
        "shared_fs": False,
        **changes,
    }
    return JobPlan(**fields)


def test_torchrun_command_is_static_rendezvous_with_every_value_written_out() -> None:
    p = plan()
    words = argv(p, p.nodes[1])
    assert words[:3] == ("/venv/bin/python", "-m", "torch.distributed.run")
    flags = dict(zip(words[3:17:2], words[4:18:2], strict=True))
    assert flags["--node-rank"] == "1" and flags["--nnodes"] == "2"
    assert flags["--master-addr"] == "10.0.0.1" and flags["--max-restarts"] == "0"
    assert words[-4:] == ("-m", "recipes.run", ".tuneboard/jobs/job-1/r.yaml", "training.lr=1e-4")
    files = p.files(p.nodes[1])
    assert files.pid == "/w/1/.tuneboard/jobs/job-1/node1/torchrun.pid"
    assert files.recipe == "/w/1/.tuneboard/jobs/job-1/r.yaml"
    assert p.node_marker(p.nodes[1]) == "tb-job-1.n1"


def test_environment_settings_interface_and_secrets() -> None:
    p = plan(cpu=True)
    env = environment(p, p.nodes[0], {"HF_TOKEN": "hf_secret", "OTHER": "x"})
    assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU run stays on CPU even on a GPU node
    assert env["HF_TOKEN"] == "hf_secret" and "OTHER" not in env
    assert env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] == "[tb-rank${rank}]:"
    user_set = plan(env=(("GLOO_SOCKET_IFNAME", "ib0"),))
    assert environment(user_set, user_set.nodes[0])["GLOO_SOCKET_IFNAME"] == "ib0"


def test_dry_run_preview_shows_secrets_by_name_and_quotes_everything() -> None:
    p = plan()
    shown = preview(p, p.nodes[1])
    assert shown.ranks == (2, 3)
    assert ("HF_TOKEN", None) in shown.env and ("TUNEBOARD_JOB", "tb-job-1.n1") in shown.env
    words = shlex.split(shown.shell_line())
    assert words[:4] == ["cd", "/w/1", "&&", "env"]
    assert "NOTE=a b $HOME `x`" in words and "HF_TOKEN=$HF_TOKEN" in words
    assert tuple(words[-len(shown.argv) :]) == shown.argv


@pytest.mark.parametrize("shell", ["bash", "sh"])
@pytest.mark.parametrize(
    ("workdir", "under_home"),
    [
        ("~/tuneboard", "tuneboard"),
        ("~/tb dir $(touch pwned)", "tb dir $(touch pwned)"),
        ("~", ""),
        ("rel/wd", "rel/wd"),
    ],
)
def test_the_previewed_line_pasted_into_a_shell_runs_in_the_nodes_workdir(
    tmp_path: Path, shell: str, workdir: str, under_home: str
) -> None:
    home = tmp_path / "home"
    (home / under_home).mkdir(parents=True, exist_ok=True)
    seen = tmp_path / "seen"
    program = tmp_path / "python"  # stands in for the node's python: where was it run?
    program.write_text(f"#!/bin/sh\npwd > {shlex.quote(str(seen))}\n")
    program.chmod(0o755)
    nodes = (NodeJob(Node("10.0.0.1", label="n0"), 0, 1, workdir, None),)
    line = preview(p := plan(nodes=nodes, python=str(program)), p.nodes[0]).shell_line()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "HF_TOKEN": "x"}
    done = subprocess.run([shell, "-c", line], env=env, cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert Path(seen.read_text().strip()) == (home / under_home).resolve()
    assert not list(tmp_path.rglob("pwned"))  # the workdir's name is data, never code


def test_log_lines_are_split_by_rank() -> None:
    assert split_rank("[tb-rank3]:[rank3]: boom") == (3, "[rank3]: boom")
    assert split_rank("W1124 torchrun says") == (None, "W1124 torchrun says")


# -- root cause -----------------------------------------------------------------------------

NODE1_TORCHRUN = [
    "W1124 00:01:13.301000 21190 torch/distributed/elastic/multiprocessing/api.py:1028] "
    "Sending process 21205 closing signal SIGTERM",
    "E1124 00:01:13.592000 21190 torch/distributed/elastic/multiprocessing/api.py:1002] "
    "failed (exitcode: 1) local_rank: 1 (pid: 21206) of binary: /venv/bin/python",
]


def test_torchrun_failure_lines_name_the_global_rank() -> None:
    [failure] = parse_failures("node1", 1, 2, NODE1_TORCHRUN)
    assert (failure.rank, failure.exit_code, failure.when) == (3, 1, "1124 00:01:13.592000")


def candidate(node: int, code: int, when: str | None, lines: list[str], seen: bool) -> Candidate:
    return Candidate(f"node{node}", node, node * 2, code, when, seen, tuple(lines), "")


def test_the_rank_that_failed_first_and_by_itself_is_the_root_cause() -> None:
    culprit = candidate(1, 1, "1124 00:01:13.592", ["RuntimeError: boom on rank 3"], seen=False)
    peer = candidate(
        0, 1, "1124 00:01:13.100", ["RuntimeError: Connection closed by peer [127.0.0.1]"], True
    )
    stopped = candidate(2, -15, "1124 00:01:12.000", ["step 40"], seen=True)
    assert is_consequence(1, peer.last_lines) and is_consequence(-15, ())
    assert choose([peer, stopped, culprit]) == culprit
    early = candidate(0, 1, "1124 00:01:13.000", ["ValueError: bad data"], seen=False)
    assert choose([culprit, early]) == early
    assert choose([]) is None


#: The end of a rank's log when the model's config is refused (transformers 5, as a tiny
#: recipe with hidden_size 66 and 4 heads printed it), then what it printed on the way out.
CHAINED = [
    "Traceback (most recent call last):",
    '  File "/venv/lib/python3.11/site-packages/huggingface_hub/dataclasses.py", line 251',
    "    validator(self)",
    "ValueError: The hidden size (66) is not a multiple of the number of attention heads (4).",
    "",
    "The above exception was the direct cause of the following exception:",
    "",
    "Traceback (most recent call last):",
    '  File "/work/recipes/run.py", line 95, in main',
    "    family.main(recipe, report, status)",
    "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    "huggingface_hub.errors.StrictDataclassClassValidationError: Class validation error for "
    "validator 'validate_architecture':",
    "    ValueError: The hidden size (66) is not a multiple of the number of attention heads (4).",
    "[W1203 20:21:45.1 ProcessGroupGloo.cpp:120] Warning: destroy_process_group() was not called",
]


def test_the_root_cause_quotes_the_ranks_own_error_line() -> None:
    assert with_error("exit code 1", CHAINED) == (
        "exit code 1: huggingface_hub.errors.StrictDataclassClassValidationError: Class "
        "validation error for validator 'validate_architecture': ValueError: The hidden size "
        "(66) is not a multiple of the number of attention heads (4)."
    )
    bad_data = ["[tuneboard] loading", "error: data.train is not set: give a .jsonl file"]
    assert error_line(bad_data) == "error: data.train is not set: give a .jsonl file"
    assert error_line(["  File x", "torch.OutOfMemoryError: CUDA out of memory.", "step"]) == (
        "torch.OutOfMemoryError: CUDA out of memory."
    )
    # torchrun's summary is the consequence; a warning's `path:line: Category:` is no error
    summary = ["torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ", "===="]
    assert error_line([*summary, "/x/y.py:3: UserWarning: slow"]) is None
    assert with_error("killed by signal 9", ["step 40"]) == "killed by signal 9"
    # torch.distributed's excepthook prefixes each line of an uncaught traceback
    prefixed = ["[rank3]: Traceback (most recent call last):", "[rank3]: RuntimeError: boom"]
    assert error_line(prefixed) == "RuntimeError: boom"


def test_a_rank_torchrun_stopped_after_its_own_error_is_a_candidate() -> None:
    """torchrun reported rank 1 (its peer's connection closed) and stopped rank 0, which
    had raised first: rank 0 is found, and being no consequence it is the root cause."""
    logs = {0: CHAINED, 1: ["RuntimeError: [pair.cc:553] Connection closed by peer"], 2: []}
    found = unreported_errors([0, 1, 2], {1}, lambda r: logs[r])
    assert [(rank, error[:40]) for rank, _, error in found] == [
        (0, "huggingface_hub.errors.StrictDataclassCl")
    ]
    reported = Candidate("n", 0, 1, 1, "1203 20:31:27.4", True, tuple(logs[1]), "exit code 1")
    stopped = Candidate("n", 0, 0, None, None, True, found[0][1], found[0][2])
    assert choose([reported, stopped]) == stopped


# -- the planner's fit check ----------------------------------------------------------------

GIB = 1024**3


def test_recipe_becomes_the_planners_setup() -> None:
    r = recipe(
        method={"kind": "qlora", "lora": {"rank": 8, "target_modules": ["q_proj", "v_proj"]}},
        training={"micro_batch_size": 4, "seq_len": 1024, "gradient_checkpointing": False},
        distributed={"zero_stage": 3, "offload_optimizer": "cpu"},
    )
    setup = setup_for(r)
    assert (setup.method, setup.zero_stage, setup.offload_optimizer) == ("qlora", 3, "cpu")
    assert (setup.lora_rank, setup.lora_targets) == (8, "q_proj,v_proj")
    assert (setup.micro_batch_size, setup.seq_len, setup.gradient_checkpointing) == (4, 1024, False)
    assert model_spec(r).params_total > 0  # the tiny model, from its config


def fit(r: Recipe, model: str, gpu: str = "NVIDIA A800-SXM4-80GB", **kw: Any) -> Any:
    args: dict[str, Any] = {
        "nodes": 1,
        "nproc_per_node": 8,
        "gpu_name": gpu,
        "gpu_memory_bytes": 80 * GIB,
        "min_free_gpu_bytes": None,
        "node_ram_bytes": 1024 * GIB,
        "cpu": False,
        **kw,
    }
    return check_fit(r, resolve_model(model), **args)


def test_a_recipe_that_will_not_fit_is_refused_with_the_breakdown() -> None:
    full = recipe(method={"kind": "full"}, distributed={"zero_stage": 0})
    report = fit(full, "llama-2-70b")
    assert report.refused and report.breakdown is not None
    assert report.breakdown.total_bytes > report.breakdown.usable_bytes
    assert "llama-2-70b full ZeRO-0" in report.reason and "GiB per GPU >" in report.reason
    lora = fit(recipe(method={"kind": "lora"}), "llama-2-7b")
    assert lora.status == "fits" and not lora.refused
    busy = fit(recipe(method={"kind": "lora"}), "llama-2-7b", min_free_gpu_bytes=2 * GIB)
    assert busy.refused and "another job?" in busy.reason


def test_fit_is_skipped_when_it_cannot_be_checked_and_loading_ram_is_warned() -> None:
    unknown = fit(recipe(), "llama-2-7b", gpu="NVIDIA GeForce GTX 1080")
    assert unknown.status == "skipped" and "not in the planner's GPU catalog" in unknown.reason
    cpu = fit(
        recipe(model={"name": "x", "dtype": "float32"}),
        "llama-2-70b",
        cpu=True,
        node_ram_bytes=64 * GIB,
    )
    assert cpu.status == "skipped" and cpu.reason.startswith("CPU run")
    assert cpu.warnings and "8 ranks each load the model" in cpu.warnings[0]
    big = fit(
        recipe(method={"kind": "full"}), "llama-2-70b", node_ram_bytes=256 * GIB, nproc_per_node=8
    )
    assert any("load with ZeRO-3" in w for w in big.warnings)


# -- files to copy --------------------------------------------------------------------------


def test_files_relative_and_present_are_copied_the_rest_must_be_on_the_nodes(
    tmp_path: Path,
) -> None:
    (tmp_path / "data" / "ds").mkdir(parents=True)
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    (tmp_path / "data" / "ds" / "a.arrow").write_text("x")
    r = two_nodes()
    r = r.model_copy(
        update={
            "data": r.data.model_copy(
                update={"train": ["data/train.jsonl", "/srv/shared.jsonl"], "eval": "data/ds"}
            ),
            "model": r.model.model_copy(update={"tiny": None, "name": "/models/llama"}),
        }
    )
    files = plan_files(r, resolve_target(r), tmp_path)
    assert [(i.local.relative_to(tmp_path).as_posix(), i.remote) for i in files.items] == [
        ("data/train.jsonl", "data/train.jsonl"),
        ("data/ds/a.arrow", "data/ds/a.arrow"),
    ]
    assert files.on_nodes == ("/models/llama", "/srv/shared.jsonl")
    shared = plan_files(r, resolve_target(two_nodes(shared_fs=True)), tmp_path)
    assert shared.items == () and "data/train.jsonl" in shared.on_nodes


def test_a_path_outside_the_workdir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.jsonl").write_text("{}\n")
    (tmp_path / "proj").mkdir()
    r = two_nodes()
    r = r.model_copy(update={"data": r.data.model_copy(update={"train": "../outside.jsonl"})})
    with pytest.raises(LauncherInputError, match="outside the job's working directory"):
        plan_files(r, resolve_target(r), tmp_path / "proj")
