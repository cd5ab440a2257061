"""Method options on CPU with the tiny model: 8-bit QLoRA, PiSSA init, and LoftQ's refusal.

8-bit: bitsandbytes LLM.int8 layers (Linear8bitLt, int8 weights) train a LoRA on CPU.
PiSSA: the adapter starts as the top-r singular part of each weight and the base keeps the
residual; final/ is converted to a plain rank-2r LoRA on the original base (checked from the
files), by the process that wrote final/ (each node's local rank 0 with save_on_each_node);
an adapter on an embedding is refused before training. LoftQ cannot run without CUDA (PEFT
computes it on cuda only): refused up front.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from recipes.schema import RecipeError, parse_recipe
from recipes.train import toy_data as tinydata
from recipes.train.runtime import RunContext, StatusFile
from recipes.train.session import PISSA_INIT, Session, train_and_save
from tests.integration.recipe_runs import assert_learned, check_pissa_conversion, run_recipe

pytestmark = pytest.mark.integration
pytest.importorskip("trl")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("methods")
    tinydata.write(root / "data" / "tiny")
    return root


def test_qlora_8bit_learns(workdir: Path) -> None:
    pytest.importorskip("bitsandbytes")
    run = run_recipe(
        "tiny-sft-qlora.yaml",
        workdir,
        "qlora8",
        "method.quantization_bits=8",
        "training.max_steps=20",
    )
    print(f"qlora 8-bit: {run.seconds:.1f} s, losses {[round(x, 3) for x in run.losses()]}")
    assert_learned(run)
    assert "qlora: base loaded in 8-bit, 14 Linear8bitLt layers, weights stored as int8" in (
        run.output
    )
    adapter = json.loads((run.out_dir / "final" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["init_lora_weights"] is True


def test_pissa_init_trains_and_saves_a_plain_lora(workdir: Path) -> None:
    run = run_recipe(
        "tiny-sft-lora.yaml",
        workdir,
        "pissa",
        "method.lora.init=pissa",
        "training.max_steps=20",
        "output.export_merged=true",
    )
    print(f"pissa: {run.seconds:.1f} s, losses {[round(x, 3) for x in run.losses()]}")
    assert_learned(run)
    assert "pissa: final adapter converted to a rank-2r LoRA" in run.output
    initial = json.loads((run.out_dir / "pissa_init" / "adapter_config.json").read_text())
    assert initial["r"] == 8
    check_pissa_conversion(
        run.out_dir,
        "checkpoint-20",
        ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"),
    )


def test_loftq_is_refused_without_cuda(workdir: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("LoftQ runs where there is CUDA")
    run = run_recipe("tiny-sft-lora.yaml", workdir, "loftq", "method.lora.init=loftq")
    assert run.returncode == 1, run.explain()
    assert run.status["phase"] == "failed", run.explain()
    assert "method.lora.init loftq needs a CUDA GPU" in run.status["error"]
    assert not (run.out_dir / "tiny-base").exists()  # refused before the data and the weights
    assert not run.metrics


def test_pissa_is_refused_where_its_conversion_cannot_hold() -> None:
    for kind in ("dora", "qlora"):
        with pytest.raises(RecipeError, match="pissa"):
            parse_recipe({"model": "m", "method": {"kind": kind, "lora": {"init": "pissa"}}})


def test_pissa_refuses_an_embedding_target_before_training(workdir: Path) -> None:
    # A regex target (a string) is not checked by name in the schema: the PEFT model is.
    run = run_recipe(
        "tiny-sft-lora.yaml",
        workdir,
        "pissa-embed",
        "method.lora.init=pissa",
        r"method.lora.target_modules=.*\.(embed_tokens|q_proj)",
    )
    print(f"pissa embedding refusal: {run.seconds:.1f} s")
    assert run.returncode == 1, run.explain()
    assert run.status["phase"] == "failed", run.explain()
    error = run.status["error"]
    assert "lora.init pissa cannot adapt an embedding" in error and "model.embed_tokens" in error
    assert "q_proj" not in error.split("(nn.Embedding)")[0]  # only the embedding is named
    assert not [m for m in run.metrics if m.get("event") == "train"]  # no training step
    assert not (run.out_dir / PISSA_INIT).exists()


class _FakeAdapterModel:
    """What train_and_save uses of a PEFT model: its modules and save_pretrained."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        self.tensors = tensors

    def named_modules(self) -> list[tuple[str, Any]]:
        return []

    def save_pretrained(self, path: str) -> None:
        from safetensors.torch import save_file

        Path(path).mkdir(parents=True, exist_ok=True)
        save_file(self.tensors, str(Path(path) / "adapter_model.safetensors"))
        config = {"r": 2, "lora_alpha": 4, "init_lora_weights": "pissa", "use_rslora": False}
        (Path(path) / "adapter_config.json").write_text(json.dumps(config))


class _FakeTrainer:
    """The Trainer as one process of a 2-node x 2-process job sees it. save_model writes as
    the Trainer does on the process it picked to write (trained weights = initial + 1)."""

    def __init__(self, save_on_each_node: bool, initial: dict[str, Any]) -> None:
        self.args = SimpleNamespace(save_on_each_node=save_on_each_node)
        self.model = _FakeAdapterModel(initial)
        self.trained = {k: v + 1 for k, v in initial.items()}
        self.steps = 0

    def train(self, resume_from_checkpoint: str | None) -> None:
        self.steps += 1

    def save_model(self, path: str) -> None:
        _FakeAdapterModel(self.trained).save_pretrained(path)


class _FakeTokenizer:
    def save_pretrained(self, path: Path) -> None:
        (Path(path) / "tokenizer.json").write_text("{}")


@pytest.mark.parametrize(
    ("save_on_each_node", "rank", "local_rank", "writes"),
    [
        (True, 0, 0, True),  # node 0's local main
        (True, 2, 0, True),  # node 1's local main: its own final/, its own pissa_init/
        (True, 3, 1, False),
        (False, 0, 0, True),  # shared filesystem: global rank 0 only, as before
        (False, 2, 0, False),
    ],
)
def test_pissa_final_is_converted_by_each_writer_of_final(
    tmp_path: Path, save_on_each_node: bool, rank: int, local_rank: int, writes: bool
) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    a_key, b_key = "m.q_proj.lora_A.weight", "m.q_proj.lora_B.weight"
    initial = {a_key: torch.randn(2, 6), b_key: torch.randn(5, 2)}
    recipe = parse_recipe(
        {
            "model": "m",
            "method": {"lora": {"init": "pissa", "rank": 2}},
            "training": {"resume": "none"},
        }
    )
    ctx = RunContext(rank, local_rank, 4, 2, cuda=False, output_dir=tmp_path)
    trainer = _FakeTrainer(save_on_each_node, initial)
    session = Session(
        recipe, ctx, StatusFile(tmp_path, enabled=False), "fp32", None, None, _FakeTokenizer()
    )

    final = train_and_save(trainer, session, peft=True)

    assert trainer.steps == 1
    assert (tmp_path / PISSA_INIT).is_dir() == writes
    assert (final / "tokenizer.json").is_file() == writes
    config = json.loads((final / "adapter_config.json").read_text())
    weights = load_file(str(final / "adapter_model.safetensors"))
    if not writes:  # what the Trainer wrote, untouched (another process owns this final/)
        assert config["r"] == 2 and weights[a_key].shape == (2, 6)
        return
    assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (4, 8, True)
    trained = trainer.trained
    assert torch.equal(weights[a_key], torch.cat([trained[a_key], initial[a_key]], dim=0))
    assert torch.equal(weights[b_key], torch.cat([trained[b_key], -initial[b_key]], dim=1))
    assert not [p.name for p in final.iterdir() if p.name.endswith(".tmp")]  # atomic writes
