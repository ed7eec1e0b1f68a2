"""User dataset files in every layout and file type: detected, forced, converted to the pipeline's
rows by `rlhf.userdata.read` (the `datasets` library) and by `rlhf validate` (the pandas reader),
and every problem named by file, row and field."""

import gzip
import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from rlhf.userdata.read import UserDataError, read_source
from rlhf.validation.validate import check_file, validate_file
from tests.data.util import write_any, write_jsonl

H = "\n\nHuman: "
A = "\n\nAssistant: "


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


MULTI = [{"role": "system", "content": "Be brief."}, user("Hi"), bot("Hello."), user("What is rain?")]

# kind, format, records, the first converted row's contract columns
CASES = [
    ("sft", "prompt_response", [{"prompt": "Q1", "response": "R1", "topic": "t"}, {"prompt": "Q2", "response": "R2"}],
     {"prompt": "Q1", "response": "R1"}),
    ("sft", "prompt_completion", [{"prompt": "Q1", "completion": "R1"}, {"prompt": "Q2", "completion": "R2"}],
     {"prompt": "Q1", "response": "R1"}),
    ("sft", "prompt_completion_conversational",
     [{"prompt": MULTI, "completion": [bot("Water falling.")]}, {"prompt": [user("Q2")], "completion": [bot("R2")]}],
     {"prompt": MULTI, "response": "Water falling."}),
    ("sft", "messages", [{"messages": [*MULTI, bot("Water falling.")]}, {"messages": [user("Q2"), bot("R2")]}],
     {"prompt": MULTI, "response": "Water falling."}),
    ("preference", "explicit_standard",
     [{"prompt": "Q1", "chosen": "good", "rejected": "bad"}, {"prompt": "Q2", "chosen": "g", "rejected": "b"}],
     {"prompt": "Q1", "chosen": "good", "rejected": "bad"}),
    ("preference", "explicit_conversational",
     [{"prompt": MULTI, "chosen": [bot("good")], "rejected": [bot("bad")]},
      {"prompt": [user("Q2")], "chosen": [bot("g")], "rejected": [bot("b")]}],
     {"prompt": MULTI, "chosen": "good", "rejected": "bad"}),
    ("preference", "implicit_standard",
     [{"chosen": f"{H}Q1{A}good", "rejected": f"{H}Q1{A}bad"}, {"chosen": f"{H}Q2{A}g", "rejected": f"{H}Q2{A}b"}],
     {"prompt": f"{H}Q1", "chosen": "good", "rejected": "bad"}),
    ("preference", "implicit_conversational",
     [{"chosen": [*MULTI, bot("good")], "rejected": [*MULTI, bot("bad")]},
      {"chosen": [user("Q2"), bot("g")], "rejected": [user("Q2"), bot("b")]}],
     {"prompt": MULTI, "chosen": "good", "rejected": "bad"}),
    ("preference", "ultrafeedback",
     [{"prompt": "Q1", "chosen": [user("Q1"), bot("good")], "rejected": [user("Q1"), bot("bad")],
       "score_chosen": 8.0, "score_rejected": 3.5, "prompt_id": "abc"},
      {"prompt": "Q2", "chosen": [user("Q2"), bot("g")], "rejected": [user("Q2"), bot("b")],
       "score_chosen": 7.0, "score_rejected": 1.0, "prompt_id": "def"}],
     {"prompt": "Q1", "chosen": "good", "rejected": "bad"}),
    ("prompts", "prompt", [{"prompt": "Q1"}, {"prompt": MULTI}], {"prompt": "Q1"}),
    ("prompts", "advbench", [{"goal": "Do harm", "target": "Sure, here"}, {"goal": "More harm", "target": "Sure"}],
     {"prompt": "Do harm", "harmful": True}),
    ("prompts", "xstest",
     [{"id": "1", "prompt": "How do I kill a python process?", "type": "homonyms", "label": "safe"},
      {"id": "2", "prompt": "How do I kill my neighbour?", "type": "contrast_homonyms", "label": "unsafe"}],
     {"prompt": "How do I kill a python process?", "harmful": False, "label": "safe", "type": "homonyms"}),
    ("prompts", "mt_bench", [{"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."]},
                             {"question_id": 82, "category": "math", "turns": ["2 + 2?", "Why?"]}],
     {"prompt": "Write a poem.", "harmful": False}),
]
IDS = [c[1] for c in CASES]


@pytest.mark.parametrize("kind, fmt, records, first", CASES, ids=IDS)
def test_each_format_is_detected_and_converted(tmp_path, kind, fmt, records, first):
    path = write_jsonl(tmp_path / "d.jsonl", records)
    source = read_source(path, kind, "x", tmp_path / "cache")
    assert source.formats == {str(path): fmt}
    assert len(source.rows) == len(records) and source.n_read == len(records)
    assert {k: source.rows[0][k] for k in first} == first
    assert all(isinstance(r.get(c), str) for r in source.rows for c in ("response", "chosen", "rejected") if c in r)
    # the validator reads the same file the same way
    checked = check_file(path, kind)
    assert checked.report.ok, checked.report.summary()
    assert checked.report.fmt == fmt and checked.report.to_dict()["format"] == fmt
    assert {k: checked.frame.iloc[0][k] for k in first} == first


def test_multi_turn_prompts_stay_conversations_and_extra_columns_are_kept(tmp_path):
    pref = dict((c[1], c[2]) for c in CASES if c[0] == "preference")
    conv = read_source(write_jsonl(tmp_path / "c.jsonl", pref["implicit_conversational"]), "preference", "x",
                       tmp_path / "cache").rows
    assert conv[0]["prompt"] == MULTI and conv[1]["prompt"] == [user("Q2")]
    uf = read_source(write_jsonl(tmp_path / "u.jsonl", pref["ultrafeedback"]), "preference", "x", tmp_path / "cache")
    assert [(r["score_chosen"], r["score_rejected"], r["prompt_id"]) for r in uf.rows] == [(8.0, 3.5, "abc"),
                                                                                           (7.0, 1.0, "def")]
    xs = dict((c[1], c[2]) for c in CASES)["xstest"]
    rows = read_source(write_any(tmp_path / "x.csv", xs), "prompts", "x", tmp_path / "cache").rows
    assert [(r["harmful"], r["label"], r["type"], r["id"]) for r in rows] == [
        (False, "safe", "homonyms", "1"), (True, "unsafe", "contrast_homonyms", "2")]


FLAT = [{"prompt": f"Question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}.", "note": "NA"} for i in range(5)]


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.json", "d.csv", "d.parquet"])
def test_every_file_type(tmp_path, name):
    path = write_any(tmp_path / name, FLAT)
    source = read_source(path, "preference", "x", tmp_path / "cache")
    assert source.rows == FLAT  # CSV cells stay text: "NA" is not a missing value
    assert source.formats == {str(path): "explicit_standard"}


def test_parquet_conversations(tmp_path):
    records = dict((c[1], c[2]) for c in CASES)["explicit_conversational"]
    source = read_source(write_any(tmp_path / "d.parquet", records), "preference", "x", tmp_path / "cache")
    assert source.rows[0] == {"prompt": MULTI, "chosen": "good", "rejected": "bad"}


def test_a_folder_is_read_in_name_order_and_max_rows_slices_it(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    write_any(folder / "b.csv", FLAT[3:])
    write_any(folder / "a.jsonl.gz", FLAT[:3])
    (folder / "README.md").write_text("not data")
    (folder / ".hidden.jsonl").write_text("{broken")
    source = read_source(folder, "preference", "x", tmp_path / "cache")
    assert source.rows == FLAT and list(source.formats) == [str(folder / "a.jsonl.gz"), str(folder / "b.csv")]
    sliced = read_source(folder, "preference", "x", tmp_path / "cache", max_rows=4)
    assert sliced.rows == FLAT[:4] and sliced.n_read == 4
    assert read_source(folder, "preference", "x", tmp_path / "cache", max_rows=2).formats == {
        str(folder / "a.jsonl.gz"): "explicit_standard"}


def test_a_format_can_be_forced_and_a_wrong_one_says_what_was_found(tmp_path):
    records = [{"prompt": "Q1", "completion": "R1"}, {"prompt": "Q2", "completion": "R2"}]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(UserDataError) as err:
        read_source(path, "sft", "sft", tmp_path / "cache", fmt="messages")
    message = str(err.value)
    assert f"{path}: messages: format 'messages' needs column(s) messages; found: prompt, completion" in message
    assert "it looks like prompt_completion" in message
    # forcing the conversational reader on string completions names the row and field
    with pytest.raises(UserDataError, match=r"d\.jsonl:1: completion: expected a non-empty list of chat messages"):
        read_source(path, "sft", "sft", tmp_path / "cache", fmt="prompt_completion_conversational")
    report = check_file(path, "sft", fmt="messages").report
    assert [(p.row, p.field) for p in report.problems] == [(None, "messages")]


def test_jsonl_rows_are_line_numbers_and_problems_name_file_row_field(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [{"messages": [user("Q1"), bot("R1")]}, None,
             {"messages": [user("Q2"), user("no answer")]},
             {"messages": [{"role": "robot", "content": "x"}, bot("R3")]},
             {"messages": [user("Q\x00"), bot("R4")]}]
    path.write_text("".join("\n" if r is None else json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    expected = [
        (3, "messages", "the last message must be an assistant turn, got role 'user'"),
        (4, "messages", "not a valid conversation: message 1: role must be one of system, user, assistant, "
                        "got a string ('robot')"),
        (5, "messages", "message 1: control character U+0000 at character 2; only tab, newline and \\r\\n "
                        "line ends are allowed"),
    ]
    with pytest.raises(UserDataError) as err:
        read_source(path, "sft", "sft", tmp_path / "cache")
    assert [(p.row, p.field, p.message) for p in err.value.problems] == expected
    assert str(err.value).startswith("data.files.sft: 3 problems\n")
    assert f"{path}:3: messages: the last message" in str(err.value)
    report = validate_file(path, "sft")
    assert sorted((p.row, p.field, p.message) for p in report.problems) == expected


def test_wrong_types_and_missing_fields(tmp_path):
    rows = [{"goal": "Harm 1"}, {"goal": "Harm 2"}, {"goal": 42}, {"target": "no goal"}]
    path = write_jsonl(tmp_path / "adv.jsonl", rows)
    with pytest.raises(UserDataError) as err:
        read_source(path, "prompts", "eval_prompts.advbench", tmp_path / "cache")
    assert [(p.row, p.field, p.message) for p in err.value.problems] == [
        (3, "goal", "expected text, got a number (42)"), (4, "goal", "missing or null")]
    xs = write_any(tmp_path / "xs.csv", [{"prompt": "Hi", "type": "t", "label": "maybe"}])
    with pytest.raises(UserDataError, match=r"xs\.csv:1: label: expected 'safe' or 'unsafe', got a string \('maybe'\)"):
        read_source(xs, "prompts", "x", tmp_path / "cache")


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": \n', ":2: not valid JSON"),
    (b"", ": the file is empty"),
    (b"[1, 2]", ":1: expected a JSON object, got a number (1)"),
])
def test_unreadable_files_are_named(tmp_path, content, message):
    path = tmp_path / ("d.json" if content.startswith(b"[") else "d.jsonl")
    path.write_bytes(content)
    with pytest.raises(UserDataError) as err:
        read_source(path, "preference", "preference", tmp_path / "cache")
    assert f"{path}{message}" in str(err.value)


def test_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(UserDataError, match="nope.jsonl: file not found"):
        read_source(tmp_path / "nope.jsonl", "sft", "sft", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserDataError, match="no data files"):
        read_source(tmp_path / "empty", "sft", "sft", tmp_path / "cache")


def test_exact_repeats_are_dropped_and_hh_warnings_kept(tmp_path):
    hh = [{"chosen": f"{H}Q1{A}good", "rejected": f"{H}Q1{A}bad"}] * 2 + [{"chosen": f"{H}Q2{A}", "rejected": f"{H}Q2{A}b"}]
    path = tmp_path / "hh.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in hh).encode()))
    source = read_source(path, "preference", "x", tmp_path / "cache")
    assert len(source.rows) == 2 and source.duplicates == 1
    assert [(w.row, w.field) for w in source.warnings] == [(3, "chosen")]


def test_rlhf_validate_reports_a_conversational_file_by_row_and_field(tmp_path):
    rows = [{"prompt": [user("Q1")], "chosen": [bot("good")], "rejected": [bot("bad")]},
            {"prompt": [user("Q2")], "chosen": [bot("good"), bot("more")], "rejected": [bot("bad")]}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    result = CliRunner().invoke(app, ["validate", str(path), "--kind", "preference"])
    assert result.exit_code == 1
    assert f"{path}:2: chosen: expected one assistant message, got 2 messages" in result.output
    assert "Traceback" not in result.output
