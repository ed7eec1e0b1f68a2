"""pandera schemas of the three dataset kinds, and their failures as row-level `Problem`s.

| kind | required text columns |
| --- | --- |
| `sft` | prompt, response |
| `preference` | prompt, chosen, rejected |
| `prompts` | prompt |

Extra columns are allowed and not checked. Every required column must hold text in every row:
no nulls, no other types, not empty or whitespace-only, no control characters (see `CONTROL`), at
most `max_chars` characters. A `prompt` may instead be a conversation: a list of messages, each an
object with a `role` (system, user or assistant) and a text `content`, the last one a user turn;
every message's text gets the same checks as a text field. Across columns: `chosen` differs from `rejected`, and no row repeats an
earlier row's required columns.
Checks look only at text values, so a wrong type or a null is reported once, by its own check.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import pandas as pd
import pandera.pandas as pa

from rlhf.chat import ROLES
from rlhf.config.validate import ValidateConfig
from rlhf.validation.formats import is_messages
from rlhf.validation.readers import describe
from rlhf.validation.report import Problem

Kind = Literal["sft", "preference", "prompts"]
COLUMNS: dict[str, tuple[str, ...]] = {
    "sft": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
    "prompts": ("prompt",),
}
DEFAULT_MAX_CHARS: int = ValidateConfig.model_fields["max_chars"].default
# C0 control characters (U+0000-U+001F) other than tab and newline; a carriage return only where it
# ends a line as "\r\n" (text exported on Windows, e.g. multi-line CSV cells). NUL and the others are
# invisible in editors and logs, yet the tokenizer turns them into tokens the model learns; a lone
# "\r" also rewrites the line it is printed on. DEL and C1 controls are not checked.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]|\r(?!\n)")


def check_kind(kind: str) -> None:
    """Reject an unknown dataset kind (a caller's mistake, not a data problem)."""
    if kind not in COLUMNS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(COLUMNS)}")


def build_schema(kind: Kind, max_chars: int, empty_ok: tuple[str, ...] = ()) -> pa.DataFrameSchema:
    """The schema of one kind; the columns in `empty_ok` may hold empty text (HH-RLHF responses)."""
    columns = {}
    for name in COLUMNS[kind]:
        checks = [pa.Check(is_prompt, name="is_prompt") if name == "prompt" else pa.Check(is_text, name="is_text")]
        if name not in empty_ok:
            checks.append(pa.Check(not_blank, name="not_blank"))
        checks.append(pa.Check(no_control, name="no_control"))
        checks.append(pa.Check(lambda s: within(s, max_chars), name="max_chars"))
        columns[name] = pa.Column(nullable=False, checks=checks)
    frame_checks = [pa.Check(lambda df: not_repeated(df, COLUMNS[kind]), name="no_duplicate")]
    if kind == "preference":
        frame_checks.append(pa.Check(chosen_differs, name="chosen_differs"))
    return pa.DataFrameSchema(columns, checks=frame_checks, strict=False)


# --- conversations as prompts ---
def message_problem(value: list) -> str | None:
    """What makes a list of messages no valid prompt (None when it is one)."""
    for i, m in enumerate(value, start=1):
        if not isinstance(m, dict):
            return f"message {i}: expected an object with role and content, got {describe(m)}"
        if m.get("role") not in ROLES:
            return f"message {i}: role must be one of {', '.join(ROLES)}, got {describe(m.get('role'))}"
        if not isinstance(m.get("content"), str):
            return f"message {i}: content must be text, got {describe(m.get('content'))}"
    if value[-1]["role"] != "user":
        return f"the last message of a prompt must be a user turn, got {value[-1]['role']!r}"
    return None


def is_conversation(value: object) -> bool:
    """A valid conversation prompt (see `message_problem`)."""
    return is_messages(value) and message_problem(value) is None


def texts(value: object) -> list[tuple[str, str]]:
    """(where, text) of every text a value holds: itself, or each message of a conversation."""
    if isinstance(value, str):
        return [("", value)]
    if is_conversation(value):
        return [(f"message {i}: ", m["content"]) for i, m in enumerate(value, start=1)]
    return []


def first_failing(value: object, passes) -> tuple[str, str]:
    """(where, text) of the first text of a value that fails a test."""
    return next((w, t) for w, t in texts(value) if not passes(t))


# --- element checks (True = passes); values that hold no text pass all but `is_text` / `is_prompt` ---
def is_text(s: pd.Series) -> pd.Series:
    return s.map(lambda v: isinstance(v, str)).astype(bool)


def is_prompt(s: pd.Series) -> pd.Series:
    return s.map(lambda v: isinstance(v, str) or is_conversation(v)).astype(bool)


def blank_ok(text: str) -> bool:
    return bool(text.strip())


def control_ok(text: str) -> bool:
    return CONTROL.search(text) is None


def not_blank(s: pd.Series) -> pd.Series:
    return s.map(lambda v: all(blank_ok(t) for _, t in texts(v))).astype(bool)


def no_control(s: pd.Series) -> pd.Series:
    return s.map(lambda v: all(control_ok(t) for _, t in texts(v))).astype(bool)


def within(s: pd.Series, max_chars: int) -> pd.Series:
    return s.map(lambda v: all(len(t) <= max_chars for _, t in texts(v))).astype(bool)


def chosen_differs(df: pd.DataFrame) -> pd.Series:
    same = [isinstance(c, str) and c == r for c, r in zip(df["chosen"], df["rejected"])]
    return pd.Series([not x for x in same], index=df.index)


def not_repeated(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    repeats = duplicate_of(df, columns)
    return pd.Series([int(row) not in repeats for row in df.index], index=df.index)


def duplicate_of(df: pd.DataFrame, columns: tuple[str, ...]) -> dict[int, int]:
    """{row: earlier row it repeats} over the given columns (non-text values compared by repr)."""
    first: dict[tuple, int] = {}
    repeats: dict[int, int] = {}
    for row, *values in zip(df.index, *(df[c] for c in columns)):
        key = tuple(v if isinstance(v, str) else repr(v) for v in values)
        if key in first:
            repeats[int(row)] = first[key]
        else:
            first[key] = int(row)
    return repeats


def check_frame(
    frame: pd.DataFrame,
    kind: Kind,
    file: str,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    empty_ok: tuple[str, ...] = (),
) -> list[Problem]:
    """Every row problem of a frame (index = row numbers) that has the kind's columns, sorted by row."""
    check_kind(kind)
    schema = build_schema(kind, max_chars, empty_ok)
    try:
        schema.validate(frame, lazy=True)
        return []
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    repeats = duplicate_of(frame, COLUMNS[kind])
    problems: dict[tuple[int, str | None, str], Problem] = {}
    for case in cases.to_dict("records"):
        field, message = explain(case, kind, max_chars, repeats)
        row = None if pd.isna(case["index"]) else int(case["index"])
        problems.setdefault((row or 0, field, message), Problem(file, row, field, message))
    order = {c: i for i, c in enumerate(COLUMNS[kind])}
    return sorted(problems.values(), key=lambda p: (p.row or 0, order.get(p.field, -1)))


def explain(
    case: dict[str, Any], kind: Kind, max_chars: int, repeats: dict[int, int]
) -> tuple[str | None, str]:
    """(field, message) of one pandera failure case."""
    check, column, value = case["check"], case["column"], case["failure_case"]
    if check == "not_nullable":
        return column, "missing or null"
    if check == "is_text" or (check == "is_prompt" and not is_messages(value)):
        return column, f"expected text, got {describe(value)}"
    if check == "is_prompt":
        return column, f"not a valid conversation: {message_problem(value)}"
    if check == "not_blank":
        where, _ = first_failing(value, blank_ok)
        return column, f"{where}empty or whitespace-only text"
    if check == "no_control":
        where, text = first_failing(value, control_ok)
        found = CONTROL.search(text)
        return column, (f"{where}control character U+{ord(found.group()):04X} at character {found.start() + 1}; "
                        "only tab, newline and \\r\\n line ends are allowed")
    if check == "max_chars":
        where, text = first_failing(value, lambda t: len(t) <= max_chars)
        return column, f"{where}text is {len(text)} characters long; the limit is {max_chars} (max_chars)"
    if check == "chosen_differs":
        return "rejected", "same text as chosen"
    if check == "no_duplicate":
        earlier = repeats.get(int(case["index"]), "?")
        return ", ".join(COLUMNS[kind]), f"duplicate of row {earlier}"
    # pandera's own failures (e.g. a check that could not run) keep pandera's words
    return column, f"{check}: {value}"

