"""The columns of an evaluation row that the judges read, with the data contract's defaults.

A sample row is an eval-prompt row plus the policy's `response`: `prompt` (text or a message list),
and the optional `set` (the prompt set; a file without the column is the one set "heldout"),
`harmful` (bool), `label` and `type` (XSTest) and the world's `topic`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhf.files import read_jsonl

DEFAULT_SET = "heldout"  # the set of a row without a `set` column


def prompt_set(row: dict[str, Any]) -> str:
    return str(row.get("set") or DEFAULT_SET)


def harmful(row: dict[str, Any]) -> bool | None:
    """The row's `harmful` flag, or None when the data do not say."""
    value = row.get("harmful")
    return None if value is None else bool(value)


def set_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """{set: prompts}, in order of first appearance."""
    return dict(Counter(prompt_set(r) for r in rows))


def read_eval_prompts(path: Path, max_prompts: int | None) -> list[dict[str, Any]]:
    """`max_prompts` rows of each prompt set in eval_prompts.jsonl (None: all), evenly spaced over
    the set (rows floor(i * n / k) of a set of n > k rows, i < k; a smaller set is kept whole), so that a slice still covers every
    part of a set written in groups (XSTest lists its safe and unsafe types in blocks); file order
    is kept. Rows are checked for the columns the judges read; a ValueError names the file, the
    row (1-based) and the field."""
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no eval prompts")
    for line, row in enumerate(rows, start=1):
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not (isinstance(prompt, str) and prompt.strip()) and not (isinstance(prompt, list) and prompt):
            raise ValueError(f"{path}, row {line}: field 'prompt' must be a non-empty string or message list")
        if not isinstance(row.get("set", ""), str):
            raise ValueError(f"{path}, row {line}: field 'set' must be a string, got {row['set']!r}")
        if row.get("harmful") is not None and not isinstance(row["harmful"], bool):
            raise ValueError(f"{path}, row {line}: field 'harmful' must be true or false, got {row['harmful']!r}")
    if max_prompts is None:
        return rows
    sizes = set_counts(rows)
    picked = {name: set(range(n)) if n <= max_prompts else {i * n // max_prompts for i in range(max_prompts)}
              for name, n in sizes.items()}
    seen: Counter[str] = Counter()
    kept = []
    for row in rows:
        name = prompt_set(row)
        if seen[name] in picked[name]:
            kept.append(row)
        seen[name] += 1
    return kept
