"""Text with C0 control characters is refused, naming file, row and field; tab, newline and "\\r\\n"
line ends are text (rlhf.validation.schemas.CONTROL)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from rlhf.validation.schemas import COLUMNS
from rlhf.validation.validate import validate_file
from tests.data.util import PREF, PROMPTS, SFT, write_any, write_jsonl

GOOD = {"sft": SFT, "preference": PREF, "prompts": PROMPTS}
ALLOWED = "only tab, newline and \\r\\n line ends are allowed"
EXCERPT = Path(__file__).resolve().parents[2] / "tests/fixtures/hh-rlhf/harmless-base-test-excerpt.jsonl"


def problems_with(tmp_path, kind: str, field: str, value: str, name: str = "d.jsonl") -> tuple[Path, list]:
    """Validate the good rows of `kind` plus one row whose `field` is `value`."""
    rows = [*GOOD[kind], {**GOOD[kind][0], field: value}]
    path = write_any(tmp_path / name, rows)
    return path, [(p.row, p.field, p.message) for p in validate_file(path, kind).problems]


@pytest.mark.parametrize("kind, field", [(k, f) for k in sorted(COLUMNS) for f in COLUMNS[k]])
def test_nul_in_any_text_field_names_file_row_and_field(tmp_path, kind, field):
    path, problems = problems_with(tmp_path, kind, field, "How do I\x00 water it?")
    row = len(GOOD[kind]) + 1
    message = f"control character U+0000 at character 9; {ALLOWED}"
    assert problems == [(row, field, message)]
    report = validate_file(path, kind)
    assert not report.ok
    assert f"{path}:{row}: {field}: {message}" in report.summary()


@pytest.mark.parametrize("char", ["\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\r"])
def test_other_controls_and_a_lone_carriage_return_are_refused(tmp_path, char):
    _, problems = problems_with(tmp_path, "sft", "response", f"ab{char}cd")
    assert problems == [(4, "response", f"control character U+{ord(char):04X} at character 3; {ALLOWED}")]


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv"])
def test_tab_newline_and_crlf_are_text(tmp_path, name):
    _, problems = problems_with(tmp_path, "sft", "response", "one\ttwo\nthree\r\nfour")
    assert problems == []


def test_only_the_first_control_character_is_named_and_the_row_once(tmp_path):
    _, problems = problems_with(tmp_path, "prompts", "prompt", "a\rb\x00c\x00")
    assert problems == [(3, "prompt", f"control character U+000D at character 2; {ALLOWED}")]


def test_hh_rlhf_dialogue_with_a_nul_is_refused_in_the_split_field(tmp_path):
    rows = [
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello there.", "rejected": "\n\nHuman: Hi\n\nAssistant: Go."},
        {"chosen": "\n\nHuman: Why?\n\nAssistant: Be\x00cause.", "rejected": "\n\nHuman: Why?\n\nAssistant: No."},
    ]
    report = validate_file(write_jsonl(tmp_path / "hh.jsonl", rows), "preference")
    assert [(p.row, p.field) for p in report.problems] == [(2, "chosen")]
    assert "control character U+0000" in report.problems[0].message


def test_shipped_hh_rlhf_excerpt_still_passes():
    result = CliRunner().invoke(app, ["validate", str(EXCERPT), "--kind", "preference"])
    assert result.exit_code == 0, result.output
    assert "no problems" in result.output
