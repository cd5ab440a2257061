"""Tiny models for demos and tests: a config from the recipe, a BPE tokenizer trained on the data.

`model.tiny` in a recipe makes the run build a model from `model.tiny.config` with random
weights (seeded) and a byte-level BPE tokenizer trained on the training texts, write both
to `<output.dir>/tiny-base/`, and from then on treat that folder like any local model —
so QLoRA, resume and merged export go through the real from_pretrained paths. The folder is
reused when it exists and was built from the same spec (so `resume: auto` sees the same
base), and rebuilt otherwise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from recipes.schema import TinyModelSection
from recipes.schema.chat_templates import CHATML, CHATML_TOKENS

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPEC_FILE = "tiny-spec.json"


def texts_of(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Every string a tokenizer should see in rows of any data format."""
    for row in rows:
        for value in row.values():
            if isinstance(value, str):
                yield value
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, dict) and isinstance(item.get("content"), str):
                        yield item["content"]


def _spec_digest(spec: TinyModelSection, texts_digest: str) -> str:
    payload = json.dumps(
        {"spec": spec.model_dump(mode="json"), "texts": texts_digest}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (GPT-2 style) with ChatML and eos/pad special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD, *CHATML_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(CHATML_TOKENS),
        chat_template=CHATML,
        model_max_length=1_000_000,
    )


def build_tiny_model(spec: TinyModelSection, texts: list[str], out_dir: Path) -> Path:
    """Write (or reuse) the tiny model and tokenizer under out_dir; returns out_dir."""
    texts_digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    digest = _spec_digest(spec, texts_digest)
    marker = out_dir / SPEC_FILE
    if marker.is_file() and json.loads(marker.read_text()).get("digest") == digest:
        return out_dir

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = train_tokenizer(texts, spec.vocab_size)
    config_kwargs = dict(spec.config)
    model_type = config_kwargs.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **config_kwargs,
    )
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    out_dir.mkdir(parents=True, exist_ok=True)
    # transformers 5 writes weights only on global rank 0 once torch.distributed is up
    # (PreTrainedModel.should_save_on_this_rank); each node's local rank 0 builds its
    # own copy here (the output dir may not be shared), so let this process write.
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    marker.write_text(json.dumps({"digest": digest, "spec": spec.model_dump(mode="json")}))
    return out_dir
