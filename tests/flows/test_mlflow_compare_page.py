"""The MLflow UI's compare page for the PPO and DPO runs, rendered by headless Chromium: both run
names and the evaluation metric names are on the page, so pressing Compare shows which algorithm
did better. The screenshot is kept in .state/screenshots/mlflow-compare.png. CI installs Debian's
chromium (.ci/run) and sets RLHF_REQUIRE_CHROMIUM, so there the test cannot skip."""

import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import mlflow
import pytest

from rlhf.stage import StageOutput
from tasks.tracking import log_stage
from tests.servers import free_port, start_server, stop_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
EVAL = {"ppo": {"eval/safety/all": 4.31, "eval/helpfulness/all": 3.22, "eval/kl_to_ref": 4.1},
        "dpo": {"eval/safety/all": 4.64, "eval/helpfulness/all": 3.21, "eval/kl_to_ref": 5.9}}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("RLHF_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed here (CI installs it)")
    return found


def render(browser: str, url: str, *args: str) -> str:
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--virtual-time-budget=30000", "--window-size=1600,1200", *args, url],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_compare_page_shows_both_runs_and_their_evaluation(tmp_path, monkeypatch):
    browser = chromium()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(f"sqlite:///{tmp_path / 'mlflow.db'}", port, tmp_path)
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("RLHF_MLFLOW_EXPERIMENT", "compare")
        monkeypatch.delenv("RLHF_PARENT_RUN_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        ids = [log_stage(stage, {"seed": 0}, StageOutput(metrics=metrics), 1.0) for stage, metrics in EVAL.items()]
        experiment = mlflow.get_experiment_by_name("compare").experiment_id
        query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([experiment])})
        url = f"{uri}/#/compare-runs?{query}"
        page = render(browser, url, "--dump-dom")
        shot = tmp_path / "compare.png"
        render(browser, url, f"--screenshot={shot}")
    finally:
        mlflow.set_tracking_uri(None)
        stop_server(server)
    kept = ROOT / ".state" / "screenshots" / "mlflow-compare.png"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, kept)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Comparing 2 Runs" in page
    for text in ("ppo", "dpo", "eval/safety/all", "eval/helpfulness/all", "eval/kl_to_ref"):
        assert text in page, f"{text!r} is not on the rendered compare page ({len(page)} characters)"
