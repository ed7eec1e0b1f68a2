"""A tracking server that is away never fails a stage that ran: its record waits in the outbox and
is logged later, once, with nothing lost."""

import json
import socket

import mlflow
import pytest
from typer.testing import CliRunner

from flows.cli import app
from rlhf.stage import StageOutput
from tasks.outbox import enqueue, make_record, pending, record_output, replay
from tasks.tracking import log_record, pipeline_run


def _output() -> StageOutput:
    return StageOutput(metrics={"loss": 0.25, "eval": {"accuracy": 0.75}},
                       history=[{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed


@pytest.fixture
def unreachable(monkeypatch):
    """MLflow pointed at a port where nothing listens, with no HTTP retries (the test's speed)."""
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def test_a_record_keeps_what_the_run_logs():
    out = _output()
    back = record_output(make_record("reward", {"lr": 1e-3}, out, 1.5))
    assert back.metrics == out.metrics and back.history == out.history


def test_replay_logs_oldest_first_and_stops_at_the_first_failure(tmp_path):
    first, second = (enqueue(make_record(s, {}, _output(), 1.0), tmp_path) for s in ("sft", "reward"))
    calls = []

    def down(record):
        calls.append(record["stage"])
        raise ConnectionError("refused")

    assert replay(down, tmp_path) == ([], "ConnectionError: refused")
    assert calls == ["sft"] and pending(tmp_path) == [first, second]
    assert replay(lambda r: f"run-{r['stage']}", tmp_path) == (["run-sft", "run-reward"], None)
    assert pending(tmp_path) == []


def test_log_record_is_idempotent_and_replaces_a_half_written_run(mlflow_sqlite):
    record = make_record("reward", {"lr": 1e-3}, _output(), 1.5)
    run_id = log_record(record)
    assert log_record(record) == run_id  # logged before the connection dropped: not logged twice
    # a run the server dropped mid-record: started, never finished
    mlflow.start_run(run_name="reward", tags={"record_id": "half"})
    mlflow.end_run(status="RUNNING")
    half = make_record("reward", {"lr": 1e-3}, _output(), 1.5) | {"record_id": "half"}
    again = log_record(half)
    runs = mlflow.search_runs(filter_string="tags.record_id = 'half'", output_format="list")
    assert [r.info.run_id for r in runs] == [again] and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["eval/accuracy"] == 0.75


def test_a_stage_with_the_server_away_succeeds_and_sync_logs_it_later(tmp_path, monkeypatch, unreachable):
    from prefect.logging import disable_run_logger

    from tasks.stages import track

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLHF_MLFLOW_EXPERIMENT", "test")
    monkeypatch.delenv("RLHF_PARENT_RUN_ID", raising=False)
    warnings = []
    with pipeline_run("pipeline-test", warnings.append) as parent:
        assert parent is None and "unreachable" in warnings[0]
    with disable_run_logger():
        assert track.fn("reward", {"lr": 1e-3}, _output(), 1.5) is None
        assert track.fn("ppo", {"lr": 1e-5}, _output(), 2.5) is None
    assert [json.loads(p.read_text())["stage"] for p in pending()] == ["reward", "ppo"]

    runner = CliRunner()
    down = runner.invoke(app, ["tracking", "sync"])
    assert down.exit_code == 1 and "2 record(s) still queued" in down.output

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the server is back
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    up = runner.invoke(app, ["tracking", "sync"])
    assert up.exit_code == 0 and "logged 2 record(s)" in up.output, up.output
    assert pending() == []
    runs = mlflow.search_runs(experiment_names=["test"], output_format="list")
    assert sorted(r.data.tags["stage"] for r in runs) == ["ppo", "reward"]
    assert runner.invoke(app, ["tracking", "sync"]).output.startswith("logged 0 record(s)")
