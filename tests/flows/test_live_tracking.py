"""Curves reach MLflow while a stage trains: `compute` opens the stage's run before the library
function starts and hands it each history row as the trainer logs it; a stage that raises leaves a
FAILED run holding the rows logged so far and the error; `track` finishes the same run, so a stage
still has one run, with every point once."""

import logging
from collections import Counter
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import tasks.stages
from rlhf.stage import StageOutput
from rlhf.train.loop import TrainingRun

ROWS = [{"step": s, "loss/sft": 1.0 / s, "train/lr": 0.1 * s} for s in (2, 4, 6)]


def stage_runs(stage: str) -> list:
    return mlflow.search_runs(experiment_names=["test"], filter_string=f"tags.stage = '{stage}'", output_format="list")


def fake_trainer(seen: list, fail_after: int | None = None):
    """A library function that logs ROWS through `TrainingRun.log`, looking at MLflow after each."""
    run = SimpleNamespace(accelerator=SimpleNamespace(is_main_process=True))

    def stage_fn(cfg, paths):
        history = []
        for i, row in enumerate(ROWS):
            if fail_after is not None and i == fail_after:
                raise ValueError("sft: the loss went through the roof")
            TrainingRun.log(run, history, dict(row))
            (live,) = stage_runs("sft")
            points = MlflowClient().get_metric_history(live.info.run_id, "loss/sft")
            seen.append((live.info.status, sorted(p.step for p in points)))
        return StageOutput(metrics={"loss/sft": 0.2}, history=history)

    return stage_fn


@pytest.fixture
def project(tmp_path, monkeypatch, mlflow_sqlite):
    monkeypatch.setattr(tasks.stages, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(tasks.stages, "link_run", lambda stage, run_id: None)
    (tmp_path / "params.yaml").write_text("sft:\n  max_steps: 6\n  warmup_steps: 0\n  sample_count: 0\n")
    return tmp_path


def test_rows_reach_mlflow_as_they_are_logged_and_track_finishes_the_same_run(project, monkeypatch):
    seen = []
    monkeypatch.setattr(tasks.stages, "library_function", lambda stage: fake_trainer(seen))
    cfg, output, seconds, tracking = tasks.stages.compute.fn("sft", str(project / "params.yaml"), str(project))
    assert seen == [("RUNNING", [2]), ("RUNNING", [2, 4]), ("RUNNING", [2, 4, 6])]  # live, one row at a time
    run_id = tasks.stages.track.fn("sft", cfg, output, seconds, str(project), tracking)
    (run,) = stage_runs("sft")
    assert run.info.run_id == run_id == tracking["live"]["run_id"] and run.info.status == "FINISHED"
    assert run.data.params["max_steps"] == "6" and run.data.tags["algorithm"] == "sft"
    points = Counter((p.step, p.value) for p in MlflowClient().get_metric_history(run_id, "train/lr"))
    assert points == Counter((r["step"], r["train/lr"]) for r in ROWS)  # each point once
    assert run.data.metrics["time/stage_seconds"] == pytest.approx(seconds)
    assert [a.path for a in MlflowClient().list_artifacts(run_id, "plots")] == ["plots/sft_curves.png"]


def test_a_failing_stage_leaves_a_failed_run_with_what_it_logged(project, monkeypatch):
    seen = []
    monkeypatch.setattr(tasks.stages, "library_function", lambda stage: fake_trainer(seen, fail_after=2))
    with pytest.raises(ValueError, match="roof"):
        tasks.stages.compute.fn("sft", str(project / "params.yaml"), str(project))
    (run,) = stage_runs("sft")
    assert run.info.status == "FAILED" and run.data.tags["error"] == "sft: the loss went through the roof"
    assert sorted(p.step for p in MlflowClient().get_metric_history(run.info.run_id, "loss/sft")) == [2, 4]
    error = MlflowClient().download_artifacts(run.info.run_id, "error.txt", str(project))
    assert open(error).read() == "ValueError: sft: the loss went through the roof\n"


def test_a_tracking_server_away_never_stops_the_stage(project, monkeypatch):
    seen, warnings = [], []
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    logger = logging.getLogger("test-live")
    monkeypatch.setattr(logger, "warning", lambda message, *args: warnings.append(message % args if args else message))
    monkeypatch.setattr(tasks.stages, "get_run_logger", lambda: logger)

    def stage_fn(cfg, paths):
        history = []
        for row in ROWS:
            TrainingRun.log(SimpleNamespace(accelerator=SimpleNamespace(is_main_process=True)), history, dict(row))
        return StageOutput(metrics={"loss/sft": 0.2}, history=history)

    monkeypatch.setattr(tasks.stages, "library_function", lambda stage: stage_fn)
    _, output, _, tracking = tasks.stages.compute.fn("sft", str(project / "params.yaml"), str(project))
    assert len(output.history) == 3 and tracking["live"] is None  # no run could be opened
    assert len(warnings) == 1 and "live MLflow logging is off" in warnings[0]
