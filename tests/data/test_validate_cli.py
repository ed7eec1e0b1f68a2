"""`rlhf validate PATH --kind KIND`: the report's summary, exit code 0 when valid and 1 otherwise."""

from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from tests.data.util import SFT, write_jsonl

EXCERPT = Path(__file__).resolve().parents[2] / "tests/fixtures/hh-rlhf/harmless-base-test-excerpt.jsonl"
runner = CliRunner()


def test_valid_file_exits_0(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT)
    result = runner.invoke(app, ["validate", str(path), "--kind", "sft"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"OK {path} (sft): 3 rows, no problems")


def test_hh_rlhf_excerpt_is_accepted_with_its_warnings():
    result = runner.invoke(app, ["validate", str(EXCERPT), "--kind", "preference"])
    assert result.exit_code == 0, result.output
    assert "42 rows, no problems, 2 warnings" in result.output


def test_bad_rows_exit_1_naming_file_row_and_field(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [*SFT, {"prompt": "q", "response": "x" * 50}])
    result = runner.invoke(app, ["validate", str(path), "--kind", "sft", "--max-chars", "40"])
    assert result.exit_code == 1
    assert f"{path}:4: response: text is 50 characters long; the limit is 40" in result.output


def test_malformed_file_exits_1_without_a_traceback(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": \n', encoding="utf-8")
    result = runner.invoke(app, ["validate", str(path), "--kind", "sft"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)  # not a crash
    assert f"{path}:2: not valid JSON" in result.output
    assert "Traceback" not in result.output
