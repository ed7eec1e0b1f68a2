"""The data stage on the user's own files (`data.source: files`): six valid datasets the validate
stage accepts, the formats reported, the raw files named as inputs, and clear errors."""

import gzip
import json
import os
import re
from pathlib import Path

import pytest

from rlhf.config import ConfigError, load_config
from rlhf.config.data import DataConfig
from rlhf.config.validate import ValidateConfig
from rlhf.files import read_jsonl
from rlhf.paths import Paths
from rlhf.stages.data import run_data
from rlhf.stages.validate import run_validate
from rlhf.userdata.read import UserDataError
from rlhf.validation.validate import prompt_key
from tests.data.util import write_any, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("RLHF_SHARED_DATA", ROOT.parent / "shared" / "data"))
H, A = "\n\nHuman: ", "\n\nAssistant: "


def hh(i):
    prefix = f"{H}Question {i}?" if i % 3 else f"{H}Hi.{A}Hello, how can I help?{H}Question {i}?"
    return {"chosen": f"{prefix}{A}Good answer {i}.", "rejected": f"{prefix}{A}Bad answer {i}."}


def conversation(i):
    return [{"role": "system", "content": "Be kind."}, {"role": "user", "content": f"Chat {i}"},
            {"role": "assistant", "content": f"Reply {i}"}, {"role": "user", "content": f"Follow-up {i}?"},
            {"role": "assistant", "content": f"Answer {i}."}]


@pytest.fixture
def project(tmp_path):
    """A project folder with raw files of several layouts under raw/."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "hh").mkdir()
    for part, rows in (("a.jsonl.gz", [hh(i) for i in range(30)]), ("b.jsonl.gz", [hh(i) for i in range(30, 60)])):
        (raw / "hh" / part).write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    write_any(raw / "sft.parquet", [{"messages": conversation(i), "source": "chat"} for i in range(40)])
    write_any(raw / "advbench.csv", [{"goal": f"Explain how to do harm {i}", "target": "Sure"} for i in range(5)])
    write_any(raw / "xstest.csv", [{"id": str(i), "prompt": f"How do I kill process {i}?", "type": "homonyms",
                                    "label": "unsafe" if i % 2 else "safe"} for i in range(4)])
    write_jsonl(raw / "mt.jsonl", [{"question_id": i, "category": "writing", "turns": [f"Write {i}.", "Again."]}
                                   for i in range(3)])
    return tmp_path


def files_config(**changes):
    files = {
        "preference": {"path": "raw/hh"},
        "sft": {"path": "raw/sft.parquet"},
        "eval_prompts": [{"name": "advbench", "path": "raw/advbench.csv"},
                         {"name": "xstest", "path": "raw/xstest.csv", "format": "xstest"},
                         {"name": "mt_bench", "path": "raw/mt.jsonl"}],
    }
    return DataConfig.model_validate({"source": "files", "files": {**files, **changes}, "heldout_fraction": 0.2})


def documented_for_files() -> set[str]:
    """Names in the first cells of docs/metrics.md's table for `data:files`."""
    text = (ROOT / "docs/metrics.md").read_text(encoding="utf-8")
    section = text.split("(`data:files`")[1].split("\n## ")[0]
    return {n for line in section.splitlines() if line.startswith("| `") for n in re.findall(r"`([^`]+)`",
                                                                                               line.split("|")[1])}


def test_user_files_become_six_valid_datasets(project):
    paths = Paths(project)
    out = run_data(files_config(), paths)
    data = {name: read_jsonl(getattr(paths, name)) for name in
            ("sft_train", "sft_heldout", "pref_train", "pref_heldout", "rl_prompts", "eval_prompts")}
    assert len(data["pref_train"]) + len(data["pref_heldout"]) == 60
    assert len(data["sft_train"]) + len(data["sft_heldout"]) == 40
    demos = data["sft_train"] + data["sft_heldout"]  # multi-turn prompts stay conversations
    assert sorted(json.dumps(d["prompt"]) for d in demos) == sorted(json.dumps(conversation(i)[:4]) for i in range(40))
    assert all(d["response"] == f"Answer {d['prompt'][1]['content'][5:]}." and d["source"] == "chat" for d in demos)
    sets = {}
    for row in data["eval_prompts"]:
        sets.setdefault(row["set"], []).append(row)
    assert {k: len(v) for k, v in sets.items()} == {"advbench": 5, "xstest": 4, "mt_bench": 3,
                                                    "heldout": len({prompt_key(r["prompt"]) for r in
                                                                    data["pref_heldout"] + data["sft_heldout"]})}
    assert all(r["harmful"] is True for r in sets["advbench"]) and not any(r["harmful"] for r in sets["mt_bench"])
    assert [(r["label"], r["harmful"]) for r in sets["xstest"]] == [("safe", False), ("unsafe", True)] * 2
    assert out.metrics["rows/rl_prompts"] == len({prompt_key(r["prompt"]) for r in data["pref_train"]})
    # what was read is reported, and the raw files are the stage's inputs
    assert {(r["entry"], Path(r["file"]).name, r["format"]) for r in out.tables["sources.json"]} == {
        ("preference", "a.jsonl.gz", "implicit_standard"), ("preference", "b.jsonl.gz", "implicit_standard"),
        ("sft", "sft.parquet", "messages"), ("eval_prompts.advbench", "advbench.csv", "advbench"),
        ("eval_prompts.xstest", "xstest.csv", "xstest"), ("eval_prompts.mt_bench", "mt.jsonl", "mt_bench")}
    assert sorted(out.inputs) == sorted(["preference/a.jsonl.gz", "preference/b.jsonl.gz", "sft/sft.parquet",
                                         "eval_prompts.advbench/advbench.csv", "eval_prompts.xstest/xstest.csv",
                                         "eval_prompts.mt_bench/mt.jsonl"])
    assert all(p.is_file() for p in out.inputs.values())
    summary = (paths.data / "summary.md").read_text()
    assert "| preference | " in summary and "implicit_standard" in summary and "messages" in summary
    # no world metric, and every metric is documented (and every documented one emitted)
    assert not any(k.startswith(("world/", "data/bayes", "data/sft_demos")) for k in out.metrics)
    assert set(out.metrics) == documented_for_files()
    # the validate stage accepts what the data stage wrote
    validated = run_validate(ValidateConfig(), paths)
    assert validated.metrics["validate/problems"] == 0


def test_sft_from_chosen_and_max_rows(project):
    cfg = files_config(sft=None, preference={"path": "raw/hh", "max_rows": 40}, eval_prompts=[])
    out = run_data(cfg, Paths(project))
    pairs = read_jsonl(Paths(project).pref_train) + read_jsonl(Paths(project).pref_heldout)
    demos = read_jsonl(Paths(project).sft_train) + read_jsonl(Paths(project).sft_heldout)
    assert len(pairs) == 40 and out.metrics["data/rows_read/preference"] == 40
    assert sorted((d["prompt"], d["response"]) for d in demos) == sorted((p["prompt"], p["chosen"]) for p in pairs)
    assert {r["set"] for r in read_jsonl(Paths(project).eval_prompts)} == {"heldout"}
    assert run_validate(ValidateConfig(), Paths(project)).metrics["validate/problems"] == 0


def test_a_bad_row_stops_the_stage_naming_file_row_and_field(project):
    write_jsonl(project / "raw" / "mt.jsonl", [{"turns": ["ok"]}, {"turns": "not a list"}])
    with pytest.raises(UserDataError) as err:
        run_data(files_config(), Paths(project))
    assert f"{project / 'raw' / 'mt.jsonl'}:2: turns: expected a list of turns, got a string" in str(err.value)
    assert str(err.value).startswith("data.files.eval_prompts.mt_bench: 1 problem")
    assert not Paths(project).sft_train.exists()  # nothing written


def test_config_errors_name_the_key(project, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.files\.sft\.format: unknown sft format 'chatml'"):
        run_data(files_config(sft={"path": "raw/sft.parquet", "format": "chatml"}), Paths(project))
    params = tmp_path / "p.yaml"
    params.write_text("data:\n  source: files\n  files:\n    sft: {path: raw/sft.parquet}\n")
    with pytest.raises(ConfigError, match=r"files\.preference: source 'files' needs a preference file"):
        load_config("data", params)
    params.write_text("data:\n  source: files\n  files:\n    preference: {path: x, max_rowz: 3}\n")
    with pytest.raises(ConfigError, match=r"data\.files\.preference\.max_rowz: unknown key"):
        load_config("data", params)
    params.write_text("data:\n  files:\n    eval_prompts: [{name: heldout, path: x}]\n")
    with pytest.raises(ConfigError, match="must differ from each other and from 'heldout'"):
        load_config("data", params)


def test_paths_are_read_from_the_project_root_given_to_the_stage(project, tmp_path, monkeypatch):
    """A params file anywhere; relative paths count from the folder the stage runs in (as DVC runs a
    stage in its dvc.yaml's folder), not from the process's working directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    params = elsewhere / "profile.yaml"
    params.write_text("data:\n  source: files\n  heldout_fraction: 0.2\n  files:\n    preference: {path: raw/hh}\n")
    out = run_data(load_config("data", params), Paths(project))
    assert out.metrics["rows/pref_train"] + out.metrics["rows/pref_heldout"] == 60
    assert not (elsewhere / "artifacts").exists() and (project / ".state" / "datasets").is_dir()


HH_TEST = SHARED / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"


@pytest.mark.skipif(not HH_TEST.is_file(), reason="HH-RLHF harmless-base test file not present")
def test_the_real_hh_rlhf_test_split(tmp_path):
    cfg = DataConfig.model_validate({"source": "files", "files": {"preference": {"path": str(HH_TEST)}}})
    out = run_data(cfg, Paths(tmp_path))
    assert out.metrics["data/rows_read/preference"] == 2312
    assert out.metrics["data/warnings"] == 9  # the warnings of rlhf.validation.hh
    assert out.metrics["data/dropped/empty_response"] == 4
    assert run_validate(ValidateConfig(), Paths(tmp_path)).metrics["validate/problems"] == 0
