"""A Prefect server that goes away never costs a stage its work: `rlhf <stage>` against a real
`prefect server` killed while the stage computes ends with exit code 0, its metrics file and its
MLflow run written, and a warning that Prefect could not record the final state; a server that does
not answer when the command starts is replaced by a temporary local one, with a warning. The stage's
library function is replaced by one that waits for the test's signal, so the kill lands mid-stage."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from tests.servers import free_port

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
START_S = 120
SCRIPT = """
import sys, time
from pathlib import Path
import tasks.stages
from flows.cli import app
from rlhf.stage import StageOutput

def stage(cfg, paths):
    Path("started").touch()
    deadline = time.monotonic() + 300
    while not Path("go-on").exists() and time.monotonic() < deadline:  # the test kills the server meanwhile
        time.sleep(0.1)
    return StageOutput(metrics={"loss/tokenizer": 0.5}, history=[{"step": 1, "loss/tokenizer": 0.7}])

tasks.stages.library_function = lambda name: stage
app(["tokenizer", "--params", "params.yaml"])
"""


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def wait_for(check, what: str, proc: subprocess.Popen, seconds: float = START_S) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds} s (exit code {proc.poll()})")
        time.sleep(0.2)


def stage_env(tmp_path: Path, api_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "RLHF_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PREFECT_API_URL=api_url,
               PREFECT_HOME=str(tmp_path / "prefect-client"), PREFECT_CLIENT_MAX_RETRIES="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", RLHF_MLFLOW_EXPERIMENT="faults")
    return env


def start_stage(tmp_path: Path, api_url: str) -> subprocess.Popen:
    (tmp_path / "params.yaml").write_text("tokenizer:\n  vocab_size: 1000\n")
    return subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=stage_env(tmp_path, api_url),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def tracked_stages(tmp_path: Path) -> list[str]:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(experiment_names=["faults"], output_format="list")
    finally:
        mlflow.set_tracking_uri(None)
    return [r.data.tags["stage"] for r in runs]


def test_a_prefect_server_killed_mid_stage_fails_nothing(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    server_env = {**stage_env(tmp_path, ""), "PREFECT_HOME": str(tmp_path / "prefect-server")}
    server_env.pop("PREFECT_API_URL")
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                                   "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=server_env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: healthy(url), "the Prefect server's start", server)
        stage = start_stage(tmp_path, url)
        wait_for((tmp_path / "started").exists, "the stage's start", stage)
        os.killpg(server.pid, signal.SIGKILL)  # an outage, not a shutdown
        server.wait()
        (tmp_path / "go-on").touch()
        out, _ = stage.communicate(timeout=600)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert stage.returncode == 0, out[-3000:]
    assert "warning: stage 'tokenizer' completed and wrote its outputs, but the Prefect server at" in out
    assert "error:" not in out
    assert (tmp_path / "metrics" / "tokenizer.json").is_file()
    assert tracked_stages(tmp_path) == ["tokenizer"]


def test_a_prefect_server_away_at_the_start_is_replaced_by_a_local_one(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    (tmp_path / "go-on").touch()
    stage = start_stage(tmp_path, url)
    out, _ = stage.communicate(timeout=600)
    assert stage.returncode == 0, out[-3000:]
    assert f"warning: the Prefect server at {url} does not answer" in out
    assert (tmp_path / "metrics" / "tokenizer.json").is_file()
    assert tracked_stages(tmp_path) == ["tokenizer"]
