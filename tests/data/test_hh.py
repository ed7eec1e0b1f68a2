"""Anthropic HH-RLHF dialogues read as preference pairs: the fixture excerpt and the shipped file.

What the shipped harmless-base test split holds (2312 rows), and how it is read:
* 5 rows (1255, 1689, 1951, 1953, 2037) whose two dialogues differ before the last Assistant turn:
  one response ran on into a turn of its own. Warning; read at the shared, shorter prompt.
* 4 rows (87, 517, 926, 1104) whose chosen response is empty: the raters preferred no reply.
  Warning; kept as an empty reply.
* no whitespace-only prompt, no chosen == rejected, no duplicate (prompt, chosen, rejected) row;
  2 prompts appear twice with different responses, which is not a duplicate row.
So the file validates with 9 warnings and no problems.
"""

import os
from pathlib import Path

import pytest

from rlhf.chat import prompt_text
from rlhf.validation.hh import split_pair
from rlhf.validation.validate import read_dataset, validate_file
from tests.data.util import write_jsonl

ROOT = Path(__file__).resolve().parents[2]
EXCERPT = ROOT / "tests/fixtures/hh-rlhf/harmless-base-test-excerpt.jsonl"
SHARED = Path(os.environ.get("RLHF_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHIPPED = SHARED / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"


def dialogue(*turns: str) -> str:
    """Alternating Human/Assistant turns in the HH-RLHF layout."""
    roles = ["Human", "Assistant"]
    return "".join(f"\n\n{roles[i % 2]}: {t}" for i, t in enumerate(turns))


def test_plain_pair_splits_at_the_last_assistant_turn():
    chosen = dialogue("Hi", "Hello!", "How do I boil an egg?", "Simmer it for eight minutes.")
    rejected = dialogue("Hi", "Hello!", "How do I boil an egg?", "No idea.")
    (prompt, c, r), notes = split_pair(chosen, rejected)
    assert prompt == dialogue("Hi", "Hello!", "How do I boil an egg?")
    assert (c, r, notes) == ("Simmer it for eight minutes.", "No idea.", [])
    assert prompt_text(prompt) == prompt + "\n\nAssistant:"  # the chat format keeps it as it is


def test_fixture_excerpt_reads_with_two_warnings():
    report = validate_file(EXCERPT, "preference")
    assert report.ok and report.n_rows == 42
    assert [(w.row, w.field) for w in report.warnings] == [(41, "chosen"), (42, "prompt")]
    frame = read_dataset(EXCERPT, "preference")
    assert list(frame.columns) == ["prompt", "chosen", "rejected"] and len(frame) == 42
    assert frame["prompt"].str.startswith("\n\nHuman: ").all()
    assert not frame["prompt"].str.endswith("\n\nAssistant:").any()
    assert frame.loc[41, "chosen"] == ""  # line 87 of the source: the raters preferred no reply
    # line 1255 of the source: the chosen response ran on into a turn of its own
    assert frame.loc[42, "prompt"].endswith("Isn't that drag kings?")
    assert "\n\nAssistant:" in frame.loc[42, "chosen"]


def test_differing_prefixes_that_share_a_prompt_are_a_warning(tmp_path):
    chosen = dialogue("Q1", "A1 Human: more?") + "\n\nAssistant: A2"  # ran on into a turn of its own
    rejected = dialogue("Q1", "B1")
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": chosen, "rejected": rejected}])
    report = validate_file(path, "preference")
    assert report.ok and [(w.row, w.field) for w in report.warnings] == [(1, "prompt")]
    assert "chosen dialogue has 1 more Assistant turn" in report.warnings[0].message
    row = read_dataset(path, "preference").loc[1]
    assert row["prompt"] == dialogue("Q1")
    assert row["chosen"] == "A1 Human: more?\n\nAssistant: A2" and row["rejected"] == "B1"


@pytest.mark.parametrize(
    "record, field, words",
    [
        ({"chosen": dialogue("Q1", "A"), "rejected": dialogue("Q2", "B")}, "prompt", "answer different prompts"),
        ({"chosen": "no turns at all", "rejected": dialogue("Q", "B")}, "chosen", "no '\\n\\nAssistant:' turn"),
        ({"chosen": dialogue("Q", "A"), "rejected": 7}, "rejected", "got a number (7)"),
        ({"chosen": dialogue("Q", "A"), "rejected": None}, "rejected", "missing or null"),
        ({"chosen": dialogue("Q", "Same"), "rejected": dialogue("Q", "Same")}, "rejected", "same text as chosen"),
        ({"chosen": dialogue("Q", " "), "rejected": dialogue("Q", "")}, "rejected", "same text as chosen"),
    ],
)
def test_bad_pairs_are_errors_naming_row_and_field(tmp_path, record, field, words):
    good = {"chosen": dialogue("Hi", "Hello"), "rejected": dialogue("Hi", "Go away")}
    report = validate_file(write_jsonl(tmp_path / "hh.jsonl", [good, record]), "preference")
    assert [(p.row, p.field) for p in report.problems] == [(2, field)]
    assert words in report.problems[0].message


def test_duplicate_hh_rows_are_errors(tmp_path):
    good = {"chosen": dialogue("Hi", "Hello"), "rejected": dialogue("Hi", "Go away")}
    report = validate_file(write_jsonl(tmp_path / "hh.jsonl", [good, good]), "preference")
    assert [(p.row, p.message) for p in report.problems] == [(2, "duplicate of row 1")]


def test_hh_layout_is_only_for_preference(tmp_path):
    good = {"chosen": dialogue("Hi", "Hello"), "rejected": dialogue("Hi", "Go away")}
    report = validate_file(write_jsonl(tmp_path / "hh.jsonl", [good]), "sft")
    assert [(p.row, p.field) for p in report.problems] == [(None, "prompt, response")]


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped HH-RLHF file not present (set RLHF_SHARED_DATA)")
def test_shipped_harmless_base_test_validates_with_warnings():
    report = validate_file(SHIPPED, "preference")
    assert report.ok, report.summary()
    assert report.n_rows == 2312
    by_field = {f: [w.row for w in report.warnings if w.field == f] for f in ("prompt", "chosen", "rejected")}
    assert by_field == {"prompt": [1255, 1689, 1951, 1953, 2037], "chosen": [87, 517, 926, 1104], "rejected": []}
    frame = read_dataset(SHIPPED, "preference")
    assert len(frame) == 2312 and frame.index.tolist() == list(range(1, 2313))
    assert (frame["chosen"] != frame["rejected"]).all()
