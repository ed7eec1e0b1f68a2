"""The summary printed after a pipeline run shows the evaluate table with the judges' columns that
some policy reports (best-of-n rows included) and leaves out the others."""

import json
import shutil
from pathlib import Path

from flows.report import print_summary

ROOT = Path(__file__).resolve().parents[2]


def test_the_evaluate_table_shows_the_reported_judges_only(tmp_path, capsys):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "metrics").mkdir()
    row = {"eval/proxy/ppo_score": 0.5, "eval/proxy/rm_score": 0.25, "eval/kl_to_ref": 0.0,
           "eval/refusal/advbench": 0.75, "eval/refusal/advbench_low": 0.5, "eval/refusal/advbench_high": 1.0}
    (tmp_path / "metrics/evaluate.json").write_text(json.dumps({"sft": row, "bon4": {**row, "eval/kl_to_ref": 0.636}}))
    print_summary(tmp_path)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "policy" in line)
    assert "refuse_adv" in header and "ppo_score" in header
    assert "helpfulness" not in header and "llm_help" not in header  # no policy reports them
    bon = next(line for line in out.splitlines() if " bon4 " in line)
    assert "0.636" in bon and "0.750" in bon


def test_the_summary_names_the_experiment_the_runs_went_to(tmp_path, capsys, monkeypatch):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.setenv("RLHF_MLFLOW_EXPERIMENT", "rlhf-real")
    print_summary(tmp_path)
    assert "(experiment 'rlhf-real')" in capsys.readouterr().out
    monkeypatch.delenv("RLHF_MLFLOW_EXPERIMENT")
    print_summary(tmp_path)
    assert "(experiment 'rlhf')" in capsys.readouterr().out
