"""A toy world for tests and benchmarks: a few templated dialogues, a tokenizer, the dataset files.

It is not the embedded world (`rlhf/world/`); it only has the same file formats
(docs/architecture.md), so trainers can be exercised in a temporary folder in seconds.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rlhf.files import write_jsonl
from rlhf.paths import Paths

_THINGS = ["cactus", "fern", "tomato", "orchid", "basil", "lemon tree", "rose", "tulip"]
_ASKS = ["How do I water a {x}?", "When should I feed my {x}?", "Where should I put a {x}?"]
_GOOD = [
    "Water the {x} lightly once a week and let the soil dry between waterings.",
    "Feed the {x} in spring with a mild fertiliser, once a month.",
    "Put the {x} near a bright window, out of cold draughts.",
]
_BAD = ["I do not know.", "Plants are plants.", "Ask someone else about the {x}."]


def sft_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` demonstrations: prompt, response, topic, harmful."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x, k = rng.choice(_THINGS), rng.randrange(len(_ASKS))
        rows.append({"prompt": _ASKS[k].format(x=x), "response": _GOOD[k].format(x=x), "topic": "garden",
                     "harmful": False})
    return rows


def pref_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` preference pairs with gold utilities and a Bradley-Terry label probability; 10% of the
    labels are flipped, as a noisy rater would."""
    rng = random.Random(seed)
    rows = []
    for row in sft_rows(n, seed):
        good, bad = row["response"], rng.choice(_BAD).format(x=row["prompt"].split()[-1].rstrip("?"))
        flip = rng.random() < 0.1
        chosen, rejected = (bad, good) if flip else (good, bad)
        gold_c, gold_r = (0.0, 3.0) if flip else (3.0, 0.0)
        rows.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "topic": "garden",
                     "harmful": False, "chosen_gold": gold_c, "rejected_gold": gold_r,
                     "p_chosen": 0.1 if flip else 0.9})
    return rows


def make_toy_world(root: str | Path, n_sft: int = 64, n_pref: int = 64, vocab_size: int = 400) -> Paths:
    """Write sft/pref train+heldout files and a tokenizer under `root`; return its `Paths`."""
    from rlhf.chat import prompt_text, response_text
    from rlhf.tokenizer import train_tokenizer

    paths = Paths(Path(root))
    write_jsonl(paths.sft_train, sft_rows(n_sft, seed=1))
    write_jsonl(paths.sft_heldout, sft_rows(max(8, n_sft // 4), seed=2))
    write_jsonl(paths.pref_train, pref_rows(n_pref, seed=3))
    write_jsonl(paths.pref_heldout, pref_rows(max(8, n_pref // 4), seed=4))
    texts = [prompt_text(r["prompt"]) + response_text(r["response"]) for r in sft_rows(64, seed=1)]
    texts += [response_text(b.format(x=x)) for b in _BAD for x in _THINGS]
    train_tokenizer(texts, vocab_size=vocab_size, min_frequency=1).save_pretrained(paths.tokenizer)
    return paths
