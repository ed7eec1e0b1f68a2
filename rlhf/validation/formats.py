"""The record layouts a user dataset may come in, and their conversion to the pipeline's rows.

Every layout is named, detected from a file's columns (and the type of the first value), and read
one record at a time into the shared row contract: `prompt` (a string, or a list of chat messages
ending with a user turn), plus `response` (sft) or `chosen` / `rejected` (preference), all
responses plain strings. Columns a layout does not consume are kept after these, for lineage.

| kind | format | columns |
| --- | --- | --- |
| sft | `prompt_response` | prompt, response (the project's own layout) |
| sft | `prompt_completion` | prompt, completion: strings |
| sft | `prompt_completion_conversational` | prompt: messages; completion: one assistant message |
| sft | `messages` | messages: a conversation; the prompt is everything before the last assistant turn |
| preference | `explicit_standard` | prompt, chosen, rejected: strings (prompt may be messages) |
| preference | `explicit_conversational` | prompt: messages; chosen, rejected: one assistant message each |
| preference | `implicit_standard` | chosen, rejected: whole HH-RLHF dialogues (`rlhf.validation.hh`) |
| preference | `implicit_conversational` | chosen, rejected: whole conversations sharing the prompt turns |
| preference | `ultrafeedback` | prompt: string; chosen, rejected: conversations holding the user turn |
| prompts | `prompt` | prompt: a string or messages |
| prompts | `advbench` | goal (harmful = true) |
| prompts | `xstest` | prompt, type, label (harmful = label == "unsafe") |
| prompts | `mt_bench` | turns: the first turn is the prompt (harmful = false) |

A record whose structure does not fit its layout (a conversation without a final assistant turn,
an XSTest label other than safe/unsafe) raises `RowError` naming the field. Text values pass
through as they are: a wrong type, a null, a blank or a control character is the schemas' to report
(`rlhf.validation.schemas`, run afterwards), named by the file's own column (`Format.source`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rlhf.errors import UserError
from rlhf.validation.hh import PairError, split_pair
from rlhf.validation.readers import describe, frame_of
from rlhf.validation.report import Problem

Record = dict[str, Any]


class RowError(UserError):
    """A record that does not fit its layout; `field` names the culprit (a column of the file)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class FormatError(UserError):
    """A file whose columns fit no layout, or not the one forced by `format:`; `field` names the
    missing column(s)."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


def as_list(value: Any) -> Any:
    """Lists as Python lists, nested (Parquet read through pandas gives numpy arrays)."""
    if isinstance(value, (np.ndarray, tuple, list)):
        return [as_list(v) for v in value]
    if isinstance(value, dict):
        return {k: as_list(v) for k, v in value.items()}
    return value


def is_messages(value: Any) -> bool:
    """A non-empty list of objects: meant as chat messages (roles and texts checked elsewhere)."""
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)


def messages(value: Any) -> Any:
    """Messages reduced to their role and content; any other value unchanged (the schema judges it)."""
    if is_messages(value):
        return [{"role": m.get("role"), "content": m.get("content")} for m in value]
    return value


def conversation(record: Record, name: str) -> list[dict[str, Any]]:
    value = record.get(name)
    if not is_messages(value):
        got = describe(value)
        raise RowError(name, "missing or null" if got == "null" else
                       f"expected a non-empty list of chat messages, got {got}")
    return messages(value)


def last_assistant(turns: list[dict[str, Any]], name: str) -> tuple[list[dict[str, Any]], Any]:
    """(the turns before the last one, the last one's text) of a conversation ending with an answer."""
    role = turns[-1]["role"]
    if role != "assistant":
        raise RowError(name, f"the last message must be an assistant turn, got role {role!r}")
    return turns[:-1], turns[-1]["content"]


def one_assistant(record: Record, name: str) -> Any:
    """The text of a completion given as a list that holds one assistant message."""
    turns = conversation(record, name)
    if len(turns) != 1:
        raise RowError(name, f"expected one assistant message, got {len(turns)} messages")
    return last_assistant(turns, name)[1]


def shared_prompt(record: Record) -> tuple[list[dict[str, Any]], Any, Any]:
    """(prompt turns, chosen text, rejected text) of two whole conversations that share the prompt."""
    prompt_c, chosen = last_assistant(conversation(record, "chosen"), "chosen")
    prompt_r, rejected = last_assistant(conversation(record, "rejected"), "rejected")
    if prompt_c != prompt_r:
        raise RowError("rejected", "the chosen and rejected conversations differ before their last "
                                   "assistant turn, so the two responses answer different prompts")
    if not prompt_c:
        raise RowError("chosen", "the conversation holds only the assistant turn: no prompt turns")
    return prompt_c, chosen, rejected


# --- one converter per format: record -> the contract's columns (+ warnings as (field, message)) ---
Row = tuple[Record, list[tuple[str, str]]]


def sft_prompt_response(r: Record) -> Row:
    return {"prompt": messages(r.get("prompt")), "response": r.get("response")}, []


def sft_prompt_completion(r: Record) -> Row:
    return {"prompt": messages(r.get("prompt")), "response": r.get("completion")}, []


def sft_prompt_completion_conversational(r: Record) -> Row:
    return {"prompt": messages(r.get("prompt")), "response": one_assistant(r, "completion")}, []


def sft_messages(r: Record) -> Row:
    prompt, response = last_assistant(conversation(r, "messages"), "messages")
    if not prompt:
        raise RowError("messages", "the conversation holds only the assistant turn: no prompt turns")
    return {"prompt": prompt, "response": response}, []


def pref_explicit_standard(r: Record) -> Row:
    return {"prompt": messages(r.get("prompt")), "chosen": r.get("chosen"), "rejected": r.get("rejected")}, []


def pref_explicit_conversational(r: Record) -> Row:
    row = {"prompt": messages(r.get("prompt")), "chosen": one_assistant(r, "chosen"),
           "rejected": one_assistant(r, "rejected")}
    return row, []


def pref_implicit_standard(r: Record) -> Row:
    """HH-RLHF dialogues, split (and warned about) as `rlhf.validation.hh` does."""
    try:
        (prompt, chosen, rejected), notes = split_pair(r.get("chosen"), r.get("rejected"))
    except PairError as err:
        raise RowError(err.field, str(err)) from None
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, notes


def pref_implicit_conversational(r: Record) -> Row:
    prompt, chosen, rejected = shared_prompt(r)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, []


def pref_ultrafeedback(r: Record) -> Row:
    """The conversations hold the user turn; the prompt column repeats it. The prompt is kept as
    that string when the conversation before the answer is exactly that one user turn."""
    prompt, chosen, rejected = shared_prompt(r)
    if len(prompt) == 1 and prompt[0]["role"] == "user" and prompt[0]["content"] == r.get("prompt"):
        prompt = r["prompt"]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, []


def prompts_prompt(r: Record) -> Row:
    return {"prompt": messages(r.get("prompt"))}, []


def prompts_advbench(r: Record) -> Row:
    return {"prompt": r.get("goal"), "harmful": True}, []


def prompts_xstest(r: Record) -> Row:
    label = r.get("label")
    if label not in ("safe", "unsafe"):
        raise RowError("label", f"expected 'safe' or 'unsafe', got {describe(label)}")
    return {"prompt": r.get("prompt"), "harmful": label == "unsafe", "label": label, "type": r.get("type")}, []


def prompts_mt_bench(r: Record) -> Row:
    turns = r.get("turns")
    if not isinstance(turns, list) or not turns:
        got = describe(turns)
        raise RowError("turns", "missing or null" if got == "null" else f"expected a list of turns, got {got}")
    return {"prompt": turns[0], "harmful": False}, []


@dataclass(frozen=True)
class Format:
    """A layout: the columns it needs (and consumes), its converter, and for each contract column
    the file's column it comes from (so a problem found in the contract's rows names the user's)."""

    columns: tuple[str, ...]
    convert: Callable[[Record], Row]
    source: dict[str, str] = field(default_factory=dict)


# kind -> format name -> Format; for each kind, `detect` below says which one a file is
FORMATS: dict[str, dict[str, Format]] = {
    "sft": {
        "prompt_response": Format(("prompt", "response"), sft_prompt_response),
        "prompt_completion": Format(("prompt", "completion"), sft_prompt_completion, {"response": "completion"}),
        "prompt_completion_conversational": Format(("prompt", "completion"), sft_prompt_completion_conversational,
                                                   {"response": "completion"}),
        "messages": Format(("messages",), sft_messages, {"prompt": "messages", "response": "messages"}),
    },
    "preference": {
        "explicit_standard": Format(("prompt", "chosen", "rejected"), pref_explicit_standard),
        "explicit_conversational": Format(("prompt", "chosen", "rejected"), pref_explicit_conversational),
        "implicit_standard": Format(("chosen", "rejected"), pref_implicit_standard),
        "implicit_conversational": Format(("chosen", "rejected"), pref_implicit_conversational,
                                          {"prompt": "chosen"}),
        "ultrafeedback": Format(("prompt", "chosen", "rejected"), pref_ultrafeedback, {"prompt": "chosen"}),
    },
    "prompts": {
        "prompt": Format(("prompt",), prompts_prompt),
        "advbench": Format(("goal",), prompts_advbench, {"prompt": "goal"}),
        "xstest": Format(("prompt", "type", "label"), prompts_xstest),
        "mt_bench": Format(("turns",), prompts_mt_bench, {"prompt": "turns"}),
    },
}


# the layout of the files the data stage writes (the shared row contract)
CONTRACT = {"sft": "prompt_response", "preference": "explicit_standard", "prompts": "prompt"}


def detect(columns: list[str], first: Record, kind: str) -> str | None:
    """The format of a file of `kind` from its columns and its first record (None if none fits)."""
    cols = set(columns)
    if kind == "sft":
        if "messages" in cols and "prompt" not in cols:
            return "messages"
        if {"prompt", "response"} <= cols:
            return "prompt_response"
        if {"prompt", "completion"} <= cols:
            return "prompt_completion_conversational" if is_messages(first.get("completion")) else "prompt_completion"
    elif kind == "preference" and {"chosen", "rejected"} <= cols:
        conversational = is_messages(first.get("chosen"))
        if "prompt" not in cols:
            return "implicit_conversational" if conversational else "implicit_standard"
        if not conversational:
            return "explicit_standard"
        return "explicit_conversational" if is_messages(first.get("prompt")) else "ultrafeedback"
    elif kind == "prompts":
        for name in ("advbench", "mt_bench", "xstest", "prompt"):
            if set(FORMATS[kind][name].columns) <= cols:
                return name
    return None


def choose(columns: list[str], first: Record, kind: str, forced: str = "auto") -> str:
    """The format to read a file with: the detected one, or `forced` when its columns are there.
    FormatError (naming the missing columns, what was found and what would fit) otherwise."""
    detected = detect(columns, first, kind)
    if forced == "auto":
        if detected is None:
            default = next(iter(FORMATS[kind].values())).columns
            missing = [c for c in default if c not in columns]
            raise FormatError(", ".join(missing) or None, f"missing column(s) {', '.join(missing)}; "
                              f"found: {found(columns)}; a {kind} file needs {expected(kind)}")
        return detected
    if forced not in FORMATS[kind]:
        raise FormatError(None, f"unknown {kind} format {forced!r}; expected auto or one of "
                                f"{', '.join(FORMATS[kind])}")
    missing = [c for c in FORMATS[kind][forced].columns if c not in columns]
    if missing:
        raise FormatError(", ".join(missing), f"format {forced!r} needs column(s) {', '.join(missing)}; "
                          f"found: {found(columns)} ({describe_detected(detected)})")
    return forced


def convert(record: Record, kind: str, fmt: str) -> Row:
    """One record in the contract's columns, followed by its other columns (kept for lineage);
    raises RowError when the record does not fit the format."""
    layout = FORMATS[kind][fmt]
    record = {k: as_list(v) for k, v in record.items()}
    row, notes = layout.convert(record)
    for key, value in record.items():
        if key not in layout.columns and key not in row:
            row[key] = value
    return row, notes


@dataclass
class Converted:
    """A file's records in the contract's columns (index = row numbers; rows in error left out),
    the format read, and the problems and warnings found on the way."""

    frame: pd.DataFrame
    fmt: str
    errors: list[Problem]
    warnings: list[Problem]


def convert_frame(frame: pd.DataFrame, kind: str, file: str, forced: str = "auto") -> Converted:
    """Convert the records of a file (as `rlhf.validation.readers` reads it); FormatError when its
    columns fit no format (or not the forced one)."""
    records = frame.to_dict("records")
    fmt = choose(list(frame.columns), records[0] if records else {}, kind, forced)
    errors: list[Problem] = []
    warnings: list[Problem] = []
    rows, values = [], []
    for row, record in zip(frame.index, records):
        try:
            value, notes = convert(record, kind, fmt)
        except RowError as err:
            errors.append(Problem(file, int(row), err.field, str(err)))
            continue
        warnings += [Problem(file, int(row), f, m) for f, m in notes]
        rows.append(int(row))
        values.append(value)
    return Converted(frame_of(values, rows), fmt, errors, warnings)


def source_field(kind: str, fmt: str, name: str | None) -> str | None:
    """The file's column behind a contract column (e.g. AdvBench's `goal` behind `prompt`)."""
    return FORMATS[kind][fmt].source.get(name, name) if name else name


def describe_detected(detected: str | None) -> str:
    return f"it looks like {detected}" if detected else "it fits no format"


def found(columns: list[str]) -> str:
    return ", ".join(map(str, columns)) or "none"


def expected(kind: str) -> str:
    return " or ".join(f"{', '.join(f.columns)} ({name})" for name, f in FORMATS[kind].items())
