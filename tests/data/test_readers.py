"""Reading every supported format, and a clear error (never a traceback) for malformed files."""

import gzip
import json

import pandas as pd
import pytest

from rlhf.validation.readers import DataFileError, read_table
from rlhf.validation.validate import read_dataset, validate_file
from tests.data.util import SFT, write_any, write_jsonl

FORMATS = ["d.jsonl", "d.jsonl.gz", "d.json", "d.csv", "d.parquet", "d.json.gz", "d.csv.gz"]


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_reads_the_same_rows(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".json.gz"):
        path.write_bytes(gzip.compress(json.dumps(SFT).encode()))
    elif name.endswith(".csv.gz"):
        path.write_bytes(gzip.compress(pd.DataFrame(SFT).to_csv(index=False).encode()))
    else:
        write_any(path, SFT)
    frame = read_dataset(path, "sft")
    assert list(frame.columns) == ["prompt", "response", "topic"]
    assert frame.index.name == "row" and frame.index.tolist() == [1, 2, 3]
    assert frame["response"].tolist() == [r["response"] for r in SFT]
    assert validate_file(path, "sft").ok


def test_jsonl_rows_are_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(SFT[0]), "", json.dumps(SFT[1]), "   ", json.dumps({**SFT[2], "response": " "})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = validate_file(path, "sft")
    assert report.n_rows == 3
    assert [(p.row, p.field) for p in report.problems] == [(5, "response")]
    assert "line numbers" in report.row_unit


def test_jsonl_lines_split_only_at_newlines(tmp_path):
    # U+2028 and NEL split lines for str.splitlines, not for JSON Lines (C0 controls such as
    # form feed are refused by validation: tests/data/test_control_characters.py)
    path = tmp_path / "d.jsonl"
    rows = [{"prompt": "a\u2028b\x85c", "response": "ok"}, {"prompt": "d", "response": "ok"}]
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows)  # Windows line ends too
    path.write_text(text, encoding="utf-8", newline="")
    frame = read_dataset(path, "sft")
    assert frame.index.tolist() == [1, 2] and frame.loc[1, "prompt"] == "a\u2028b\x85c"


def test_csv_rows_are_data_rows_and_cells_stay_text(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,response\nNA,None\n"two\nlines",ok\nq,\n', encoding="utf-8")
    report = validate_file(path, "sft")
    # data row 3 starts on file line 5; "NA" and "None" are text, an empty cell is empty text
    assert [(p.row, p.field, p.message) for p in report.problems] == [
        (3, "response", "empty or whitespace-only text")
    ]
    assert report.row_unit == "rows are 1-based data rows, header excluded"
    assert "header excluded" in report.summary()


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffprompt\nhello\n".encode("utf-8"))
    assert read_dataset(path, "prompts")["prompt"].tolist() == ["hello"]


def test_parquet_wrong_type_is_a_row_problem(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"prompt": [1, 2], "response": ["a", "b"]}).to_parquet(path)
    report = validate_file(path, "sft")
    assert [(p.row, p.field) for p in report.problems] == [(1, "prompt"), (2, "prompt")]
    assert "expected text, got a number (1)" in report.problems[0].message


def malformed(tmp_path, case):
    """Write one malformed file; return (path, expected row or None, words in the message)."""
    good = json.dumps(SFT[0])
    if case == "bad_json_line":
        path = tmp_path / "d.jsonl"
        path.write_text(f"{good}\n{good}\n{{\"prompt\": \"x\",\n{good}\n", encoding="utf-8")
        return path, 3, "not valid JSON"
    if case == "not_an_object":
        path = write_jsonl(tmp_path / "d.jsonl", [SFT[0], ["a", "list"]])
        return path, 2, "expected a JSON object, got an array"
    if case == "not_utf8":
        path = tmp_path / "d.jsonl"
        path.write_bytes(f"{good}\n".encode() + '{"prompt": "caf\u00e9", "response": "x"}\n'.encode("latin-1"))
        return path, None, "not UTF-8 text: byte 0xe9 on line 2"
    if case == "truncated_gzip":
        whole = gzip.compress((good + "\n").encode() * 200)
        path = tmp_path / "d.jsonl.gz"
        path.write_bytes(whole[: len(whole) // 2])
        return path, None, "truncated gzip"
    if case == "corrupt_gzip":
        path = tmp_path / "d.jsonl.gz"
        path.write_bytes(b"this is not gzip at all")
        return path, None, "corrupt gzip"
    if case == "missing_file":
        return tmp_path / "nope.jsonl", None, "file not found"
    if case == "directory":
        (tmp_path / "dir.jsonl").mkdir()
        return tmp_path / "dir.jsonl", None, "not a regular file"
    if case in ("empty_jsonl", "empty_csv", "empty_json"):
        path = tmp_path / f"d.{case.split('_')[1]}"
        path.write_text("\n" if case == "empty_jsonl" else "", encoding="utf-8")
        return path, None, "the file is empty"
    if case == "empty_array":
        path = tmp_path / "d.json"
        path.write_text("[]", encoding="utf-8")
        return path, None, "no records"
    if case == "header_only_csv":
        path = tmp_path / "d.csv"
        path.write_text("prompt,response\n", encoding="utf-8")
        return path, None, "no data rows"
    if case == "zero_byte_parquet":
        path = tmp_path / "d.parquet"
        path.write_bytes(b"")
        return path, None, "the file is empty"
    if case == "empty_parquet":
        path = tmp_path / "d.parquet"
        pd.DataFrame({"prompt": pd.Series([], dtype=str), "response": pd.Series([], dtype=str)}).to_parquet(path)
        return path, None, "no records"
    if case == "unknown_extension":
        path = tmp_path / "d.txt"
        path.write_text("hello", encoding="utf-8")
        return path, None, "unknown file type '.txt'"
    if case == "no_extension":
        path = tmp_path / "data"
        path.write_text("hello", encoding="utf-8")
        return path, None, "unknown file type 'data'"
    if case == "json_lines_named_json":
        path = tmp_path / "d.json"
        path.write_text(f"{good}\n{good}\n", encoding="utf-8")
        return path, None, "name the file .jsonl"
    if case == "json_not_array":
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"prompt": ["a"]}), encoding="utf-8")
        return path, None, "expected a JSON array of objects, got an object"
    if case == "array_item_not_object":
        path = tmp_path / "d.json"
        path.write_text(json.dumps([SFT[0], "text"]), encoding="utf-8")
        return path, 2, "expected a JSON object, got a string ('text')"
    if case == "ragged_csv":
        path = tmp_path / "d.csv"
        path.write_text("prompt,response\na,b\na,b,c\n", encoding="utf-8")
        return path, None, "not valid CSV"
    if case == "corrupt_parquet":
        path = tmp_path / "d.parquet"
        path.write_bytes(b"PAR1 definitely not parquet")
        return path, None, "not a readable Parquet file"
    if case == "gzipped_parquet":
        path = tmp_path / "d.parquet.gz"
        path.write_bytes(gzip.compress(b"x"))
        return path, None, "unknown file type '.parquet.gz'"
    raise ValueError(case)


MALFORMED = [
    "bad_json_line", "not_an_object", "not_utf8", "truncated_gzip", "corrupt_gzip", "missing_file",
    "directory", "empty_jsonl", "empty_csv", "empty_json", "empty_array", "header_only_csv",
    "empty_parquet", "zero_byte_parquet", "unknown_extension", "no_extension",
    "json_lines_named_json", "json_not_array", "array_item_not_object", "ragged_csv",
    "corrupt_parquet", "gzipped_parquet",
]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_file_is_one_clear_problem(tmp_path, case):
    path, row, words = malformed(tmp_path, case)
    report = validate_file(path, "sft")  # never raises
    assert not report.ok and report.n_problems == 1
    problem = report.problems[0]
    assert (problem.file, problem.row) == (str(path), row)
    assert words in problem.message
    assert "Traceback" not in report.summary()
    with pytest.raises(DataFileError, match="FAILED"):
        read_dataset(path, "sft")


def test_reader_error_names_the_line(tmp_path):
    path, _, _ = malformed(tmp_path, "bad_json_line")
    with pytest.raises(DataFileError, match=r"^line 3: not valid JSON") as err:
        read_table(path)
    assert err.value.row == 3
