"""The columns of an evaluation row that the judges read, with the data contract's defaults.

A sample row is an eval-prompt row plus the policy's `response`: `prompt` (text or a message list),
and the optional `set` (the prompt set; a file without the column is the one set "heldout"),
`harmful` (bool), `label` and `type` (XSTest) and the world's `topic`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

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
