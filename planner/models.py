"""`--model` -> ModelSpec: a catalog name, a config.json (or its folder), a size, an HF id.

Resolution order: catalog name or alias -> existing local path (a value that looks
like a path but is not there is an error, not an HF id) -> size (`7b`,
`30B`, `0.5b`, `350m`) -> Hugging Face model id (`org/name`, only its
config.json is fetched, from `$HF_ENDPOINT` or https://huggingface.co).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from planner.errors import PlannerInputError
from planner.hf_config import spec_from_hf_config
from planner.model_catalog import find_catalog_entry, load_catalog
from planner.specs import ModelSpec

HUB_TIMEOUT_S = 8.0
#: Sizes that name a LLaMA-1 model exactly (Touvron et al. 2023, Table 2): `30b`
#: is LLaMA-30B, whose real count is 32.5B.
LLAMA1_SIZES = {
    7.0: "llama-7b",
    13.0: "llama-13b",
    30.0: "llama-30b",
    33.0: "llama-30b",
    65.0: "llama-65b",
}
_SIZE_RE = re.compile(r"([0-9]*\.?[0-9]+)\s*([bBmM])")


def resolve_model(text: str, *, revision: str = "main") -> ModelSpec:
    """Resolve a `--model` value. Raises PlannerInputError naming what would be accepted."""
    return resolve_model_config(text, revision=revision)[0]


def resolve_model_config(text: str, *, revision: str = "main") -> tuple[ModelSpec, dict[str, Any]]:
    """Like `resolve_model`, also returning the transformers config dict it came from
    (what `--trace` builds the model from)."""
    value = text.strip()
    if not value:
        raise PlannerInputError(
            "--model is empty: give a catalog name, a size such as 7b, or a path"
        )
    entry = find_catalog_entry(value)
    if entry is not None:
        spec = spec_from_hf_config(
            entry.config, name=entry.name, source="catalog", hf_id=entry.hf_id, note=entry.note
        )
        return spec, entry.config_dict()
    path = Path(value).expanduser()
    if path.exists():
        config = _read_config(path)
        name = path.name if path.is_dir() else (path.parent.name or path.stem)
        return spec_from_hf_config(config, name=name, source="config"), config
    if looks_like_path(value):
        raise PlannerInputError(
            f"--model {value}: no such file or folder (a config.json or the folder holding one)"
        )
    size = _SIZE_RE.fullmatch(value)
    if size is not None:
        return reference_model_config(value)
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", value):
        config = fetch_hub_config(value, revision=revision)
        return spec_from_hf_config(config, name=value, source="hub", hf_id=value), config
    raise PlannerInputError(unknown_model_message(value))


def looks_like_path(value: str) -> bool:
    """A `--model` value meant as a local path, never an HF id (`org/name`): it starts
    with ./ ../ / or ~, ends with .json, has a separator other than `/` or more than one
    `/`, or its first part is a local folder (`models/llama` beside `models/`)."""
    if value.startswith(("./", "../", "/", "~")) or value in (".", ".."):
        return True
    if value.lower().endswith(".json"):
        return True
    separators = {os.sep, os.altsep or os.sep} - {"/"}
    if any(sep in value for sep in separators) or value.count("/") > 1:
        return True
    return "/" in value and Path(value.split("/", 1)[0]).is_dir()


def unknown_model_message(value: str) -> str:
    names = [e.name for e in load_catalog()]
    aliases = {a.lower(): e.name for e in load_catalog() for a in e.aliases}
    pool = names + list(aliases)
    close = difflib.get_close_matches(value.lower(), pool, n=4, cutoff=0.5)
    suggestions = []
    for c in close:
        suggestions.append(aliases.get(c, c))
    unique = list(dict.fromkeys(suggestions))
    hint = f" Did you mean: {', '.join(unique)}?" if unique else ""
    return (
        f"--model {value!r} is not a catalog model, a file, a size (7b, 30b, 0.5b) or an HF id "
        f"(org/name).{hint} `tuneboard models` lists the catalog."
    )


def _read_config(path: Path) -> dict[str, Any]:
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise PlannerInputError(f"--model {str(path)!r}: no config.json in that folder")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlannerInputError(
            f"--model {str(file)!r}: not a readable JSON config ({exc})"
        ) from None
    if not isinstance(config, dict):
        raise PlannerInputError(f"--model {str(file)!r}: a config.json must hold a JSON object")
    return config


def fetch_hub_config(model_id: str, *, revision: str = "main") -> dict[str, Any]:
    """Fetch only config.json of a Hugging Face model. HF_TOKEN is sent, never shown."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    url = f"{endpoint}/{model_id}/resolve/{revision}/config.json"
    request = urllib.request.Request(url, headers={"User-Agent": "tuneboard"})
    token = os.environ.get("HF_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT_S) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            why = "it is gated or private: set HF_TOKEN"
        elif exc.code == 404:
            why = "no such model or revision"
        else:
            why = f"HTTP {exc.code}"
        raise PlannerInputError(
            f"--model {model_id!r}: cannot fetch its config.json ({why})"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PlannerInputError(
            f"--model {model_id!r}: cannot reach {endpoint} ({reason}); offline? Pass a local "
            "config.json or model folder, a catalog name (`tuneboard models`) or a size like 7b"
        ) from None
    try:
        config = json.loads(body)
    except json.JSONDecodeError:
        raise PlannerInputError(f"--model {model_id!r}: its config.json is not JSON") from None
    if not isinstance(config, dict):
        raise PlannerInputError(f"--model {model_id!r}: its config.json is not a JSON object")
    return config


def reference_model(text: str) -> ModelSpec:
    """A LLaMA-shaped reference architecture of about the given size (see
    `reference_model_config`)."""
    return reference_model_config(text)[0]


def reference_model_config(text: str) -> tuple[ModelSpec, dict[str, Any]]:
    """A LLaMA-shaped reference architecture of about the given size.

    Exact LLaMA-1 sizes (7b, 13b, 30b/33b, 65b) are those models. Other sizes get a
    LLaMA-style shape: hidden size a multiple of 256 with depth ≈ hidden/128 (the
    LLaMA-1 aspect ratio), SwiGLU width ≈ 8/3·h rounded up to 256, head dim 128,
    vocab 32000, and the layer count chosen so the total is as close as it gets.
    """
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise PlannerInputError(f"--model {text!r}: a size looks like 7b, 30b, 0.5b or 350m")
    billions = float(m.group(1)) * (1.0 if m.group(2).lower() == "b" else 1e-3)
    if billions <= 0 or billions > 5000:
        raise PlannerInputError(f"--model {text!r}: size must be between 0 and 5000b")
    label = f"{m.group(1)}{m.group(2).lower()}"
    exact = LLAMA1_SIZES.get(billions)
    if exact is not None:
        entry = find_catalog_entry(exact)
        if entry is not None:
            base = spec_from_hf_config(entry.config, name=label, source="size", hf_id=None)
            note = (
                f"{label} = {entry.name} ({_billions(base.params_total)} params: hidden "
                f"{base.hidden_size}, {base.num_layers} layers)"
            )
            return _with_note(base, note), entry.config_dict()
    config = _llama_shape(billions * 1e9)
    spec = spec_from_hf_config(config, name=label, source="size")
    note = (
        f"{label} = LLaMA-shaped reference, {_billions(spec.params_total)} params: hidden "
        f"{spec.hidden_size}, {spec.num_layers} layers, MLP {spec.intermediate_size}, vocab 32000"
    )
    return _with_note(spec, note), config


def _billions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n < 1e10 else f"{n / 1e9:.1f}B"


def _with_note(spec: ModelSpec, note: str) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, note=note)


def _llama_shape(target: float) -> dict[str, Any]:
    vocab = 32000
    best: tuple[float, dict[str, Any]] | None = None
    for h in range(256, 32768 + 1, 256):
        inter = 256 * math.ceil(8 * h / 3 / 256)
        per_layer = 4 * h * h + 3 * h * inter + 2 * h
        rest = 2 * vocab * h + h
        layers = round((target - rest) / per_layer)
        if layers < 1:
            continue
        aspect = h / layers
        if not 64 <= aspect <= 160 and h > 1024:
            continue
        total = rest + layers * per_layer
        error = abs(total - target) / target + abs(math.log(aspect / 128)) * 0.05
        if best is None or error < best[0]:
            heads = max(1, h // 128) if h >= 1024 else max(1, h // 64)
            best = (
                error,
                {
                    "model_type": "llama",
                    "hidden_size": h,
                    "intermediate_size": inter,
                    "num_hidden_layers": layers,
                    "num_attention_heads": heads,
                    "num_key_value_heads": heads,
                    "vocab_size": vocab,
                    "tie_word_embeddings": False,
                    "max_position_embeddings": 4096,
                    "rms_norm_eps": 1e-6,
                },
            )
    if best is None:
        raise PlannerInputError(f"cannot build a reference model of {target / 1e9:.3g}B params")
    return best[1]
