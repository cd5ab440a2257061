"""`--model`: catalog, local config, size reference, HF id (over a local HTTP server)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from planner.errors import PlannerInputError
from planner.models import reference_model, resolve_model

LLAMA_7B_CONFIG = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}


def test_catalog_names_and_aliases() -> None:
    assert resolve_model("llama-2-7b").params_total == 6_738_415_616
    assert resolve_model("meta-llama/Llama-2-7b-hf").name == "llama-2-7b"
    assert resolve_model("Qwen2.5-7B").params_total == 7_615_616_512


def test_local_config_file_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_7B_CONFIG))
    by_folder = resolve_model(str(folder))
    by_file = resolve_model(str(folder / "config.json"))
    assert by_folder.params_total == by_file.params_total == 6_738_415_616
    assert by_folder.source == "config"
    assert by_folder.name == "my-model"


def test_bad_local_config(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(PlannerInputError, match="not a readable JSON config"):
        resolve_model(str(bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PlannerInputError, match=r"no config\.json"):
        resolve_model(str(empty))


NO_SUCH_PATH = ": no such file or folder (a config.json or the folder holding one)"


@pytest.mark.parametrize(
    "value", ["./nonexistent", "../x", "/no/such", "~/no-such", "cfg.json", "a/b/c", "here/nope"]
)
def test_a_path_that_is_not_there_says_so_and_never_asks_the_hub(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()  # `here/nope`: its first part is a local folder
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # were it asked: "offline?"
    with pytest.raises(PlannerInputError) as err:
        resolve_model(value)
    assert str(err.value) == f"--model {value}{NO_SUCH_PATH}"


@pytest.mark.parametrize(
    ("size", "name"), [("7b", "llama-7b"), ("30b", "llama-30b"), ("65B", "llama-65b")]
)
def test_llama1_sizes_are_those_models(size: str, name: str) -> None:
    spec = resolve_model(size)
    assert spec.params_total == resolve_model(name).params_total
    assert spec.source == "size"
    assert spec.note is not None and name in spec.note


@pytest.mark.parametrize("size", ["0.5b", "1b", "3b", "20b", "100b", "350m"])
def test_other_sizes_are_close_llama_shapes(size: str) -> None:
    spec = reference_model(size)
    target = float(size[:-1]) * (1e9 if size.endswith("b") else 1e6)
    assert spec.params_total == pytest.approx(target, rel=0.12)
    assert spec.model_type == "llama" and spec.mlp_kind == "gated"
    assert spec.note is not None and "LLaMA-shaped reference" in spec.note


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(PlannerInputError) as err:
        resolve_model("llama-2-7")
    msg = str(err.value)
    assert "'llama-2-7'" in msg and "llama-2-7b" in msg and "tuneboard models" in msg


class _ConfigHandler(http.server.BaseHTTPRequestHandler):
    seen_auth: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization", ""))
        if self.path == "/acme/tiny/resolve/main/config.json":
            body = json.dumps(LLAMA_7B_CONFIG).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/acme/gated/"):
            self.send_response(401)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ConfigHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    yield endpoint
    server.shutdown()


def test_hf_id_fetches_only_config_json(hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    spec = resolve_model("acme/tiny")
    assert spec.source == "hub" and spec.params_total == 6_738_415_616
    assert _ConfigHandler.seen_auth[-1] == "Bearer hf_secret_value"


def test_hf_id_errors(hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    with pytest.raises(PlannerInputError) as err:
        resolve_model("acme/missing")
    assert "no such model" in str(err.value)
    with pytest.raises(PlannerInputError) as err:
        resolve_model("acme/gated")
    assert "HF_TOKEN" in str(err.value) and "hf_secret_value" not in str(err.value)


def test_hf_id_offline_gives_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(PlannerInputError) as err:
        resolve_model("acme/tiny")
    assert "offline?" in str(err.value) and "config.json" in str(err.value)
