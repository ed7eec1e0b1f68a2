"""A real MLflow server killed between two stages: the second stage's record waits in the outbox,
and once the server is back on the same store the replay logs it; both runs then exist once, with
every metric and every curve point, none lost and none duplicated."""

import json
from collections import Counter
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from rlhf.stage import StageOutput
from tasks.outbox import pending, replay
from tasks.tracking import flatten, log_record
from tests.servers import free_port, start_server, stop_server

pytestmark = pytest.mark.faults

def stage_output(scale: float) -> StageOutput:
    return StageOutput(metrics={"loss/sft": 0.45 * scale, "eval": {"loss/sft": 0.75 * scale}},
                       history=[{"step": s, "loss/sft": scale / s, "train/lr": 1e-3 * s} for s in (1, 2, 3, 4, 5)])


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A tracking server on a SQLite store in `tmp_path`; the test may stop and start it again."""
    store, port = f"sqlite:///{tmp_path / 'mlflow.db'}", free_port()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.chdir(tmp_path)  # the outbox and the artifacts live in this project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("RLHF_MLFLOW_EXPERIMENT", "faults")
    monkeypatch.delenv("RLHF_PARENT_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    running = {"proc": start_server(store, port, tmp_path)}

    class Server:
        def stop(self):
            stop_server(running["proc"])

        def start(self):
            running["proc"] = start_server(store, port, tmp_path)

    yield Server()
    stop_server(running["proc"])
    mlflow.set_tracking_uri(None)


def test_a_record_queued_during_an_outage_is_logged_once_when_the_server_returns(server, tmp_path):
    from prefect.logging import disable_run_logger

    from tasks.stages import track

    outputs = {"sft": stage_output(1.0), "reward": stage_output(2.0)}
    with disable_run_logger():
        first = track.fn("sft", {"lr": 1e-3}, outputs["sft"], 1.5)
        assert isinstance(first, str) and pending() == []
        server.stop()
        assert track.fn("reward", {"lr": 2e-3}, outputs["reward"], 2.5) is None  # the stage still succeeds
    (queued,) = pending()
    assert json.loads(queued.read_text())["stage"] == "reward"

    server.start()
    logged, error = replay(log_record, tmp_path)
    assert error is None and len(logged) == 1 and pending() == []

    client = MlflowClient()
    runs = mlflow.search_runs(experiment_names=["faults"], output_format="list")
    assert sorted(r.data.tags["stage"] for r in runs) == ["reward", "sft"]  # each once
    by_stage = {r.data.tags["stage"]: r for r in runs}
    assert by_stage["sft"].info.run_id == first and by_stage["reward"].info.run_id == logged[0]
    for stage, out in outputs.items():
        run = by_stage[stage]
        assert run.info.status == "FINISHED"
        assert run.data.params["lr"] == str({"sft": 1e-3, "reward": 2e-3}[stage])
        final = {**flatten(out.metrics), "time/stage_seconds": {"sft": 1.5, "reward": 2.5}[stage]}
        assert set(run.data.metrics) == set(final) | {"train/lr"}
        for key in set(final) - set(out.history[0]):  # not also a curve (a curve's point may be the value shown)
            assert run.data.metrics[key] == pytest.approx(final[key]), (stage, key)
        for key in ("loss/sft", "train/lr"):
            points = Counter((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            curve = Counter((row["step"], row[key]) for row in out.history)
            assert not curve - points, (stage, key, "points lost")
            # beyond the curve, only the final value (MLflow picks its step)
            extra = [value for _, value in (points - curve).elements()]
            assert extra == ([out.metrics[key]] if key in out.metrics else []), (stage, key, "points duplicated")


def test_a_server_killed_mid_stage_loses_no_live_point(server, tmp_path, monkeypatch):
    """Curves go to MLflow live (tasks.live); the server dies after two rows: live logging turns
    off, the stage ends, its record waits; once the server is back, the replay finishes the same
    run with the rows it missed: every point once, one run, FINISHED."""
    import logging
    from types import SimpleNamespace

    import tasks.stages
    from rlhf.train.loop import TrainingRun

    rows = [{"step": s, "loss/sft": 1.0 / s, "train/lr": 1e-3 * s} for s in (1, 2, 3, 4)]

    def stage_fn(cfg, paths):
        history, run = [], SimpleNamespace(accelerator=SimpleNamespace(is_main_process=True))
        for row in rows:
            if row["step"] == 3:
                server.stop()
            TrainingRun.log(run, history, dict(row))
        return StageOutput(metrics={"loss/sft": 0.25}, history=history)

    monkeypatch.setattr(tasks.stages, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(tasks.stages, "link_run", lambda stage, run_id: None)
    monkeypatch.setattr(tasks.stages, "library_function", lambda stage: stage_fn)
    (tmp_path / "params.yaml").write_text("sft:\n  max_steps: 4\n  warmup_steps: 0\n  sample_count: 0\n")
    cfg, output, seconds, tracking = tasks.stages.compute.fn("sft", "params.yaml", str(tmp_path))
    assert tracking["live"]["through"] == 2  # rows 1 and 2 went live
    assert tasks.stages.track.fn("sft", cfg, output, seconds, str(tmp_path), tracking) is None
    assert len(pending()) == 1

    server.start()
    logged, error = replay(log_record, tmp_path)
    assert error is None and logged == [tracking["live"]["run_id"]] and pending() == []
    (run,) = mlflow.search_runs(experiment_names=["faults"], output_format="list")
    assert run.info.run_id == logged[0] and run.info.status == "FINISHED"
    client = MlflowClient()
    for key in ("loss/sft", "train/lr"):
        points = Counter((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        expected = Counter((r["step"], r[key]) for r in rows)
        if key == "loss/sft":
            expected[(4, 0.25)] += 1  # the final value, at the last step
        assert points == expected, key
