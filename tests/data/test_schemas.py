"""Every bad-row check of every kind names the right row and field."""

import pandas as pd
import pytest

from rlhf.config.validate import ValidateConfig
from rlhf.validation.schemas import COLUMNS, DEFAULT_MAX_CHARS, build_schema, check_frame
from rlhf.validation.validate import validate_file
from tests.data.util import PREF, PROMPTS, SFT, write_jsonl

GOOD = {"sft": SFT, "preference": PREF, "prompts": PROMPTS}
TEXT = {"sft": "response", "preference": "chosen", "prompts": "prompt"}  # a column each kind checks


def with_bad_row(kind: str, change: dict) -> list[dict]:
    """The good rows of `kind` followed by a copy of the first one with `change` applied."""
    bad = {**GOOD[kind][0], **change}
    return [*GOOD[kind], {k: v for k, v in bad.items() if v is not DROP}]


DROP = object()  # marks a key to leave out of a record


@pytest.mark.parametrize("kind", sorted(COLUMNS))
@pytest.mark.parametrize(
    "value, message",
    [
        (None, "missing or null"),
        (DROP, "missing or null"),
        ("", "empty or whitespace-only text"),
        (" \n\t ", "empty or whitespace-only text"),
        (42, "expected text, got a number (42)"),
        (["a"], "expected text, got an array (['a'])"),
        ("x" * 101, "text is 101 characters long; the limit is 100 (max_chars)"),
    ],
)
def test_bad_value_reported_once_with_row_and_field(tmp_path, kind, value, message):
    field = TEXT[kind]
    rows = with_bad_row(kind, {field: value})
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", rows), kind, max_chars=100)
    bad_row = len(rows)
    assert [(p.row, p.field, p.message) for p in report.problems] == [(bad_row, field, message)]
    assert report.summary().splitlines()[1].strip() == f"{tmp_path / 'd.jsonl'}:{bad_row}: {field}: {message}"


@pytest.mark.parametrize("kind", sorted(COLUMNS))
def test_duplicate_row_names_the_row_it_repeats(tmp_path, kind):
    rows = [*GOOD[kind], {**GOOD[kind][1], "topic": "another extra value"}]
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", rows), kind)
    fields = ", ".join(COLUMNS[kind])
    assert [(p.row, p.field, p.message) for p in report.problems] == [(len(rows), fields, "duplicate of row 2")]


def test_chosen_equal_to_rejected(tmp_path):
    rows = with_bad_row("preference", {"chosen": "Same answer.", "rejected": "Same answer."})
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", rows), "preference")
    assert [(p.row, p.field, p.message) for p in report.problems] == [(3, "rejected", "same text as chosen")]


@pytest.mark.parametrize("kind", sorted(COLUMNS))
def test_missing_column_is_a_file_problem(tmp_path, kind):
    column = COLUMNS[kind][-1]
    rows = [{k: v for k, v in r.items() if k != column} for r in GOOD[kind]]
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", rows), kind)
    assert [(p.row, p.field) for p in report.problems] == [(None, column)]
    assert f"missing column(s) {column}" in report.problems[0].message


def test_many_problems_in_one_file_sorted_by_row(tmp_path):
    rows = [
        {"prompt": "ok", "response": "fine"},
        {"prompt": None, "response": 3},
        {"prompt": " ", "response": "fine"},
        {"prompt": "ok", "response": "fine"},
    ]
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", rows), "sft")
    assert [(p.row, p.field) for p in report.problems] == [
        (2, "prompt"), (2, "response"), (3, "prompt"), (4, "prompt, response")
    ]
    assert report.n_problems == 4 and not report.ok
    summary = report.summary(max_shown=2)
    assert "4 problems in 4 rows" in summary and "... and 2 more" in summary


def test_extra_columns_are_allowed_and_not_checked(tmp_path):
    rows = [{**r, "topic": None, "harmful": 3} for r in SFT]
    assert validate_file(write_jsonl(tmp_path / "d.jsonl", rows), "sft").ok


def test_check_frame_on_a_frame_and_the_schema_object():
    frame = pd.DataFrame({"prompt": ["a", "b"]}, index=pd.Index([10, 20], name="row"))
    assert check_frame(frame, "prompts", "f") == []
    assert check_frame(frame.assign(prompt=["a", "a"]), "prompts", "f")[0].row == 20
    schema = build_schema("preference", max_chars=10)
    assert set(schema.columns) == {"prompt", "chosen", "rejected"}


def test_default_limit_comes_from_the_config():
    assert DEFAULT_MAX_CHARS == ValidateConfig().max_chars
