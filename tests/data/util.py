"""Small helpers that write dataset files for the data tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd

SFT = [
    {"prompt": "How do I water a cactus?", "response": "Lightly, once a month.", "topic": "plants"},
    {"prompt": "Explain rainbows.", "response": "Sunlight splits into colours in raindrops.", "topic": "weather"},
    {"prompt": "Name a prime.", "response": "Seven.", "topic": "math"},
]
PREF = [
    {"prompt": "How do I water a cactus?", "chosen": "Lightly, monthly.", "rejected": "Daily.", "p_chosen": 0.8},
    {"prompt": "Explain rainbows.", "chosen": "Light splits in raindrops.", "rejected": "Magic.", "p_chosen": 0.9},
]
PROMPTS = [{"prompt": "Tell me a joke."}, {"prompt": "What is 2 + 2?"}]


def write_jsonl(path: Path, rows: list) -> Path:
    """One JSON value a line (plain or gzip by the suffix)."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_any(path: Path, rows: list[dict]) -> Path:
    """Write records in the format the file name names (.jsonl[.gz], .json, .csv, .parquet)."""
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        return write_jsonl(path, rows)
    if name.endswith(".json"):
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif name.endswith(".csv"):
        pd.DataFrame(rows).to_csv(path, index=False)
    elif name.endswith(".parquet"):
        pd.DataFrame(rows).to_parquet(path, index=False)
    else:
        raise ValueError(name)
    return path
