"""`dvc repro` from a fresh clone: stages run through Prefect and MLflow; a second run is a no-op;
`dvc push` / `dvc pull` restore the outputs from the local remote."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _clone(dest: Path) -> None:
    """Copy the working tree as git sees it (tracked and new files, not ignored ones) and commit."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone"]):
        subprocess.run(cmd, cwd=dest, check=True)


def _dvc(clone: Path, env: dict, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=clone, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_dvc_repro_in_a_fresh_clone(tmp_path, prefect_harness, mlflow_sqlite):
    from prefect.settings import PREFECT_API_URL

    clone = tmp_path / "clone"
    clone.mkdir()
    _clone(clone)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()  # stage flows report to the test server

    first = _dvc(clone, env, "repro", "tokenizer")
    for stage in ("data", "validate", "tokenizer"):
        assert f"Running stage '{stage}'" in first
    metrics = json.loads((clone / "metrics/data.json").read_text())
    for key in ("data/bayes_optimal_accuracy", "data/sft_demos/helpfulness/benign", "data/sft_demos/safety/harmful"):
        assert key in metrics
    assert (clone / "artifacts/tokenizer/tokenizer.json").exists()
    shown = _dvc(clone, env, "metrics", "show")
    assert "data/bayes_optimal_accuracy" in shown

    second = _dvc(clone, env, "repro", "tokenizer")
    assert "Running stage" not in second

    runs = mlflow.search_runs(experiment_names=["test"], output_format="list")
    by_stage = {r.data.tags.get("stage"): r for r in runs}
    assert {"data", "validate", "tokenizer"} <= set(by_stage)
    assert {d.dataset.name for d in by_stage["validate"].inputs.dataset_inputs} >= {"sft_train", "pref_heldout"}

    _dvc(clone, env, "push", "data", "validate", "tokenizer")
    before = (clone / "artifacts/data/sft_train.jsonl").read_bytes()
    shutil.rmtree(clone / "artifacts")
    shutil.rmtree(clone / ".dvc/cache")
    _dvc(clone, env, "pull", "data", "validate", "tokenizer")
    assert (clone / "artifacts/data/sft_train.jsonl").read_bytes() == before
    assert "Running stage" not in _dvc(clone, env, "repro", "tokenizer")


PIPELINE = """
import sys
from flows.pipeline import pipeline
state = pipeline(only=sys.argv[1].split(","), return_state=True)
print("STATE", state.type.value, state.message)
"""


def _pipeline(clone: Path, env: dict, stages: str) -> str:
    done = subprocess.run([sys.executable, "-c", PIPELINE, stages], cwd=clone, env=env, capture_output=True, text=True)
    return done.stdout + done.stderr


def test_the_pipeline_flow_nests_its_stage_runs_and_reports_their_errors(tmp_path, prefect_harness, mlflow_sqlite):
    """Each stage that `dvc repro` runs is a subflow run of the pipeline's flow run (the Prefect UI
    lists it under the pipeline); a stage that fails fails the pipeline with the stage's own message."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterParentTaskRunId
    from prefect.settings import PREFECT_API_URL

    clone = tmp_path / "clone"
    clone.mkdir()
    _clone(clone)
    env = {**os.environ, "PYTHONPATH": str(clone), "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = _pipeline(clone, env, "data,validate")
    assert "STATE COMPLETED" in out, out[-3000:]

    with get_client(sync_client=True) as client:
        (parent,) = [r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(like_="pipeline-params-dvc-data+validate-")))]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [parent.id]}))
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in tasks])))
    assert sorted(r.name for r in children) == ["data", "validate"]
    assert all(r.state.is_completed() for r in children)
    runs = mlflow.search_runs(experiment_names=["test"], output_format="list")
    assert {r.info.run_name for r in runs if r.data.tags.get("kind") == "pipeline"} == {parent.name}  # one name in both UIs

    params = (clone / "params.yaml").read_text().replace("validate:\n", "validate:\n  no_such_key: 1\n", 1)
    (clone / "params.yaml").write_text(params)
    out = _pipeline(clone, env, "validate")
    assert "STATE FAILED" in out
    assert re.search(r"stage 'validate' failed \(dvc repro exited with \d+\): params.yaml: invalid section "
                     r"'validate': - validate.no_such_key: unknown key", out), out[-3000:]
