"""MLflow logging against a real SQLite store."""

import json

import mlflow

from rlhf.stage import StageOutput
from tasks.tracking import file_md5, flatten, log_stage, pipeline_run


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a/b": 1, "a/c/d": 2, "e": 3}


def test_log_stage_records_params_metrics_inputs_tables_and_nesting(tmp_path, mlflow_sqlite):
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) for i in range(3)))
    report = tmp_path / "report.json"
    report.write_text("{}")
    out = StageOutput(
        metrics={"eval/rewards/accuracies": 0.8, "sft": {"eval/helpfulness/benign": 2.5}},
        history=[{"step": 1, "loss/policy": 0.5}, {"step": 2, "loss/policy": 0.25}],
        inputs={"pref_heldout": data},
        reports=[report],
        tables={"samples.json": [{"prompt": "p", "response": "r", "helpfulness": 3}]},
    )
    with pipeline_run("pipeline-test") as parent_id:
        run_id = log_stage("reward", {"lr": 1e-3, "model": {"n_layer": 2}}, out, seconds=1.5)

    client = mlflow.tracking.MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent_id
    assert run.data.tags["stage"] == "reward"
    assert run.data.params["model/n_layer"] == "2"
    assert run.data.metrics["eval/rewards/accuracies"] == 0.8
    assert run.data.metrics["sft/eval/helpfulness/benign"] == 2.5
    assert [m.value for m in client.get_metric_history(run_id, "loss/policy")] == [0.5, 0.25]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "pref_heldout"
    assert dataset_input.dataset.digest == file_md5(data)
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "reports")
    }
    assert "samples.json" in artifacts and "reports/report.json" in artifacts


def test_no_key_from_the_environment_reaches_the_tracking_store(tmp_path, mlflow_sqlite, monkeypatch):
    """The LLM judge's key is named by its variable (`evaluate.llm.api_key_env`), never logged: every
    byte MLflow wrote for a run (the SQLite store and the artifact folder) is scanned for it."""
    from rlhf.config.evaluate import EvaluateConfig
    from tasks.tracking import use_experiment

    secret = "sk-test-3f9a1c77e2b04d5c"
    monkeypatch.setenv("JUDGE_API_KEY", secret)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    cfg = EvaluateConfig(judges=["refusal", "llm"],
                         llm={"base_url": "http://127.0.0.1:9/v1", "model": "judge", "api_key_env": "JUDGE_API_KEY"})
    use_experiment(tmp_path)
    with pipeline_run("pipeline-test"):
        run_id = log_stage("evaluate", cfg.model_dump(mode="json"), StageOutput(metrics={"sft": {"eval/x": 1.0}}), 1.0)
    assert mlflow.get_run(run_id).data.params["llm/api_key_env"] == "JUDGE_API_KEY"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written)
    assert not [p for p in written if secret.encode() in p.read_bytes()]


def test_each_policy_run_carries_its_evaluation_and_final_values_sit_at_the_last_step(mlflow_sqlite):
    """Compare in the MLflow UI: the PPO and DPO runs hold their own eval/... figures (tag
    algorithm=<stage>), the pipeline's run the whole table; a final value closes its curve."""
    client = mlflow.tracking.MlflowClient()
    history = [{"step": 1, "loss/policy": 0.5}, {"step": 2, "loss/policy": 0.25}]
    with pipeline_run("pipeline-test") as parent_id:
        runs = {s: log_stage(s, {}, StageOutput(metrics={"loss/policy": 0.25}, history=history), 1.0)
                for s in ("sft", "ppo", "dpo")}
        evaluation = {p: {"eval/rm/win_rate": w, "policy/eos_share": 0.5} for p, w in
                      (("sft", 0.5), ("ppo", 0.625), ("dpo", 0.75), ("bon4", 0.875))}
        log_stage("evaluate", {}, StageOutput(metrics=evaluation), 1.0)
    for stage, run_id in runs.items():
        run = client.get_run(run_id)
        assert run.data.tags["algorithm"] == stage
        assert run.data.metrics["eval/rm/win_rate"] == evaluation[stage]["eval/rm/win_rate"]
        assert run.data.metrics["eval/policy/eos_share"] == 0.5
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss/policy")] == [(1, 0.5), (2, 0.25), (2, 0.25)]
    parent = client.get_run(parent_id)
    assert parent.data.metrics["bon4/eval/rm/win_rate"] == 0.875 and parent.data.metrics["ppo/eval/rm/win_rate"] == 0.625


def test_runs_carry_their_provenance_and_a_pipeline_that_ran_nothing_leaves_no_run(tmp_path, mlflow_sqlite):
    data = tmp_path / "prefs.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}))
    with pipeline_run("pipeline-every-stage-up-to-date") as idle:
        pass  # DVC skipped every stage
    assert mlflow.get_run(idle).info.lifecycle_stage == "deleted"
    with pipeline_run("pipeline-test") as parent_id:
        run_id = log_stage("reward", {}, StageOutput(metrics={"x": 1.0}, inputs={"pref_train": data}), 1.0)
    run = mlflow.get_run(run_id)
    assert len(run.data.tags["git_commit"].removesuffix("+changes")) == 40  # the tests run in the repository
    assert run.data.tags["data/pref_train"] == file_md5(data)
    assert mlflow.get_run(parent_id).info.lifecycle_stage == "active"
