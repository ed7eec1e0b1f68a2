"""The report API, the train/held-out overlap check and the `validate` stage."""

import json
from pathlib import Path

import pytest

from rlhf.config import ConfigError, load_config
from rlhf.config.validate import ValidateConfig
from rlhf.validation.readers import DataFileError
from rlhf.validation.report import Problem, ValidationReport
from rlhf.stages.validate import run_validate
from rlhf.validation.validate import ValidationFailed, check_overlap, read_dataset, validate_file
from rlhf.paths import Paths
from tests.data.util import write_any, write_jsonl

CFG = ValidateConfig(max_chars=200, max_problems_shown=3)


def world(paths: Paths) -> dict[str, list[dict]]:
    """Write six small, valid world files; return their rows by name."""
    rows = {
        "sft_train": [{"prompt": f"train question {i}", "response": f"answer {i}"} for i in range(4)],
        "sft_heldout": [{"prompt": f"held-out question {i}", "response": f"answer {i}"} for i in range(2)],
        "pref_train": [{"prompt": f"pref question {i}", "chosen": "good", "rejected": "bad"} for i in range(3)],
        "pref_heldout": [{"prompt": f"held-out pref {i}", "chosen": "good", "rejected": "bad"} for i in range(2)],
        "rl_prompts": [{"prompt": f"rl prompt {i}", "harmful": False} for i in range(5)],
        "eval_prompts": [{"prompt": f"eval prompt {i}", "harmful": True} for i in range(2)],
    }
    paths.data.mkdir(parents=True, exist_ok=True)
    for name, data in rows.items():
        write_jsonl(getattr(paths, name), data)
    return rows


def test_report_summary_and_dict():
    report = ValidationReport("f.jsonl", "sft", n_rows=10, row_unit="rows are 1-based line numbers")
    assert report.ok and report.n_problems == 0
    assert report.summary() == "OK f.jsonl (sft): 10 rows, no problems"
    report.problems += [Problem("f.jsonl", i, "prompt", "empty or whitespace-only text") for i in (2, 5, 7)]
    report.problems.append(Problem("f.jsonl", None, None, "whole-file note"))
    lines = report.summary(max_shown=2).splitlines()
    assert lines[0] == "FAILED f.jsonl (sft): 4 problems in 10 rows (rows are 1-based line numbers)"
    assert lines[1:] == ["  f.jsonl:2: prompt: empty or whitespace-only text",
                         "  f.jsonl:5: prompt: empty or whitespace-only text", "  ... and 2 more"]
    assert str(report.problems[-1]) == "f.jsonl: whole-file note"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["n_problems"] == 4 and data["problems"][0]["row"] == 2


def test_read_dataset_raises_a_clear_error_for_bad_rows(tmp_path):
    path = write_any(tmp_path / "d.csv", [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": " "}])
    with pytest.raises(DataFileError) as err:
        read_dataset(path, "sft")
    assert isinstance(err.value, ValueError)
    assert f"{path}:2: response: empty or whitespace-only text" in str(err.value)


def test_unknown_kind_and_bad_limit_are_caller_errors(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}])
    with pytest.raises(ValueError, match="unknown dataset kind"):
        validate_file(path, "chat")
    with pytest.raises(ValueError, match="max_chars"):
        validate_file(path, "prompts", max_chars=0)


def test_overlap_names_held_out_row_and_train_row(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "alpha"}, {"prompt": "beta  question"}])
    pref = write_jsonl(tmp_path / "pref.jsonl", [
        {"chosen": "\n\nHuman: gamma\n\nAssistant: yes", "rejected": "\n\nHuman: gamma\n\nAssistant: no"},
    ])
    heldout = write_jsonl(tmp_path / "heldout.jsonl", [
        {"prompt": "delta"}, {"prompt": "beta question"}, {"prompt": "gamma"}, {"prompt": "Alpha"},
    ])
    report = check_overlap({train: "prompts", pref: "preference"}, {heldout: "prompts"})
    # whitespace runs do not hide an overlap, an HH-RLHF prompt matches its plain form, case counts
    assert [(p.file, p.row, p.field) for p in report.problems] == [
        (str(heldout), 2, "prompt"), (str(heldout), 3, "prompt")
    ]
    assert report.problems[0].message == f"prompt also in the train file {train} (row 2)"
    assert report.n_rows == 4 and not report.ok


def test_overlap_reports_an_unreadable_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "alpha"}])
    report = check_overlap({train: "prompts"}, {tmp_path / "missing.jsonl": "prompts"})
    assert [p.message for p in report.problems] == ["cannot check overlap: file not found"]


def test_run_validate_writes_reports_on_success(tmp_path):
    paths = Paths(tmp_path)
    rows = world(paths)
    out = run_validate(CFG, paths)
    assert out.metrics["validate/files"] == 6 and out.metrics["validate/problems"] == 0
    assert out.metrics["rows/rl_prompts"] == len(rows["rl_prompts"]) == 5
    assert out.inputs == {name: getattr(paths, name) for name in rows}
    assert out.reports == [paths.validation / "report.json", paths.validation / "summary.md"]
    data = json.loads((paths.validation / "report.json").read_text())
    assert data["ok"] and data["config"] == CFG.model_dump() and len(data["reports"]) == 7
    assert "| " + str(paths.sft_train) + " | sft | 4 | 0 | 0 |" in (paths.validation / "summary.md").read_text()
    assert not [p for p in paths.validation.iterdir() if p.name.endswith(".tmp")]


def test_run_validate_fails_and_removes_a_stale_report(tmp_path):
    paths = Paths(tmp_path)
    rows = world(paths)
    run_validate(CFG, paths)  # a report from an earlier, good run
    write_jsonl(paths.sft_train, [*rows["sft_train"], {"prompt": "new", "response": ""}])
    write_jsonl(paths.eval_prompts, [{"prompt": "rl prompt 3"}, {"prompt": "x" * 201}])
    with pytest.raises(ValidationFailed) as err:
        run_validate(CFG, paths)
    message = str(err.value)
    assert message.startswith("validation failed: 3 problems in 3 of 7 checks")
    assert f"{paths.sft_train}:5: response: empty or whitespace-only text" in message
    assert f"{paths.eval_prompts}:2: prompt: text is 201 characters long" in message
    assert f"{paths.eval_prompts}:1: prompt: prompt also in the train file {paths.rl_prompts} (row 4)" in message
    assert sum(r.n_problems for r in err.value.reports) == 3
    assert not (paths.validation / "report.json").exists() and not (paths.validation / "summary.md").exists()


def test_run_validate_fails_on_a_missing_file(tmp_path):
    paths = Paths(tmp_path)
    world(paths)
    paths.pref_heldout.unlink()
    with pytest.raises(ValidationFailed, match=f"{paths.pref_heldout}: file not found"):
        run_validate(CFG, paths)


def test_config_from_params_and_its_limits(tmp_path):
    cfg = load_config("validate", Path(__file__).resolve().parents[2] / "params.yaml")
    assert isinstance(cfg, ValidateConfig) and cfg.max_chars >= 1
    params = tmp_path / "params.yaml"
    params.write_text("validate:\n  max_chars: 0\n  colour: red\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="validate.max_chars") as err:
        load_config("validate", params)
    assert "validate.colour: unknown key" in str(err.value)
