"""`dvc repro` from a fresh clone: stages run through Prefect and MLflow; a second run is a no-op;
`dvc push` / `dvc pull` restore the outputs from the local remote."""

import json
import os
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
