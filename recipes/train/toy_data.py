"""Write a small, learnable toy dataset in every format the recipes train on.

    python -m recipes.train.toy_data data/tiny            # ~256 examples per file, seconds
    python -m recipes.train.toy_data data/tiny --rows 64 --seed 1

The task: a fixed cycle of twelve words ("red orange yellow ... brown red orange ..."). Given
a few words, the next ones are fully determined, so a two-layer model's loss falls fast and
keeps falling — the CPU tests assert that it goes down. Files written:

  text.jsonl          {"text": "green blue indigo violet ..."}            pretrain, sft
  prompt_completion.jsonl  {"prompt": "continue: green blue", "completion": " indigo violet"}
  prompt_completion.csv    the same rows as CSV (file-format coverage)
  messages.jsonl      {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}
  preference.jsonl    {"prompt", "chosen": the true continuation, "rejected": a shuffled one}
  kto.jsonl           {"prompt", "completion", "label": true|false}
  prompts.jsonl       {"prompt", "answer"}                              grpo

`cycle_reward` scores GRPO completions on the same task (task.grpo.rewards:
"recipes.train.toy_data:cycle_reward").
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WORDS = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "indigo",
    "violet",
    "black",
    "white",
    "gray",
    "pink",
    "brown",
)


def _run(start: int, length: int) -> list[str]:
    return [WORDS[(start + i) % len(WORDS)] for i in range(length)]


def _wrong(words: list[str], rng: random.Random) -> list[str]:
    """A continuation of the same length that breaks the cycle."""
    shuffled = list(words)
    while shuffled == words:
        rng.shuffle(shuffled)
        if len(set(words)) == 1:
            shuffled = [WORDS[(WORDS.index(words[0]) + 5) % len(WORDS)]] * len(words)
    return shuffled


def cycle_reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    """GRPO reward for prompts.jsonl: per word of the answer, 1 when the completion has the
    right colour at that position, 0.5 for another colour word, 0 otherwise; averaged, so
    each completion scores in [0, 1]. A random tiny model scores ~0.02; one that has learnt
    to answer in colour words ~0.5; the full cycle, 1."""
    scores = []
    for completion, expected in zip(completions, answer, strict=True):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        said, wanted = str(text).split(), expected.split()
        points = sum(
            1.0 if said[i] == word else 0.5 if said[i] in WORDS else 0.0
            for i, word in enumerate(wanted)
            if i < len(said)
        )
        scores.append(points / len(wanted))
    return scores


def make_rows(rows: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Rows for each file, deterministic in (rows, seed)."""
    rng = random.Random(seed)
    out: dict[str, list[dict[str, Any]]] = {
        name: []
        for name in ("text", "prompt_completion", "messages", "preference", "kto", "prompts")
    }
    for i in range(rows):
        start = rng.randrange(len(WORDS))
        seen = rng.randint(2, 4)
        more = rng.randint(3, 6)
        words = _run(start, seen + more)
        head, tail = words[:seen], words[seen:]
        prompt = "continue: " + " ".join(head)
        completion = " " + " ".join(tail)
        wrong = " " + " ".join(_wrong(tail, rng))
        out["text"].append({"text": " ".join(_run(start, rng.randint(12, 24)))})
        out["prompt_completion"].append({"prompt": prompt, "completion": completion})
        out["messages"].append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": completion.strip()},
                ]
            }
        )
        out["preference"].append({"prompt": prompt, "chosen": completion, "rejected": wrong})
        good = i % 2 == 0
        out["kto"].append(
            {"prompt": prompt, "completion": completion if good else wrong, "label": good}
        )
        out["prompts"].append({"prompt": prompt, "answer": completion.strip()})
    return out


def write(out_dir: Path, rows: int = 256, seed: int = 0) -> dict[str, Path]:
    """Write every file under out_dir; returns name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, items in make_rows(rows, seed).items():
        path = out_dir / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(item) + "\n")
        written[name] = path
        if name == "prompt_completion":
            csv_path = out_dir / "prompt_completion.csv"
            with csv_path.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=["prompt", "completion"])
                writer.writeheader()
                writer.writerows(items)
            written["prompt_completion_csv"] = csv_path
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.train.toy_data", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="folder to write the files into")
    parser.add_argument("--rows", type=int, default=256, help="examples per file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write(args.out_dir, args.rows, args.seed).items():
        print(f"{name:24} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
