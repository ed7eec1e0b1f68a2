"""Stages on workers, end to end on one machine: `rlhf stack up` in the orchestrating clone (Prefect
and MLflow servers, the deployments of prefect.yaml, a CPU-pool worker), a GPU-pool worker in a
second clone, one shared DVC remote; `prefect deployment run rlhf/full-pipeline --watch` on tiny
params. The training stages run in the second clone, their outputs come back through the remote,
`dvc status` is clean in the orchestrating clone, and the MLflow server holds every stage's run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from flows.dag import stage_order
from tests.flows.test_dvc import _clone
from tests.flows.test_metric_names import TINY_PARAMS
from tests.servers import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
GPU_STAGES = {"sft", "reward", "ppo", "dpo", "evaluate"}


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} in {cwd}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def clone_env(clone: Path, **extra: str) -> dict:
    """The environment of a process in `clone`: its code first on the path, its own state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "RLHF_"))}
    env.update(PYTHONPATH=str(clone), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PREFECT_HOME=str(clone / ".state" / "prefect"), RLHF_MLFLOW_EXPERIMENT="workers", **extra)
    return env


def tiny_profile(orchestrator: Path, params: dict) -> str:
    """A profile `profiles/tiny` in the clone: the root's stages (code deps as `../../rlhf/...`), its
    own tiny params, and an input no stage writes, versioned with `dvc add` (as a profile's raw
    data is) and read by the SFT stage, so the GPU worker must pull it. Returns the project folder."""
    folder = orchestrator / "profiles" / "tiny"
    folder.mkdir(parents=True)
    spec = yaml.safe_load((orchestrator / "dvc.yaml").read_text())
    for stage in spec["stages"].values():
        stage["deps"] = [d if d.startswith("artifacts/") else f"../../{d}" for d in stage["deps"]]
    spec["stages"]["sft"]["deps"].append("notes/extra.txt")
    spec.pop("plots", None)
    (folder / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "notes").mkdir()
    (folder / "notes" / "extra.txt").write_text("versioned with dvc add, read by no code\n")
    run([sys.executable, "-m", "dvc", "add", "-q", "notes"], folder, os.environ)
    return "profiles/tiny"


@pytest.mark.parametrize("project", [".", "profiles/tiny"])
def test_the_full_pipeline_deployment_runs_its_training_stages_on_the_gpu_pool_worker(tmp_path, project):
    orchestrator, gpu_clone, remote = tmp_path / "orchestrator", tmp_path / "gpu-worker", tmp_path / "remote"
    orchestrator.mkdir()
    _clone(orchestrator)
    params = yaml.safe_load((orchestrator / "params.yaml").read_text())  # DVC wants every section
    for section, values in yaml.safe_load(TINY_PARAMS).items():
        params[section].update(values)
    if project == ".":
        (orchestrator / "params.yaml").write_text(yaml.safe_dump(params))
    else:
        tiny_profile(orchestrator, params)
    for clone in (orchestrator,):  # one remote for both clones, in each clone's local config
        run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "local", "url", str(remote)], clone, os.environ)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    run(git + ["add", "-A"], orchestrator, os.environ)
    run(git + ["commit", "-qm", "tiny params"], orchestrator, os.environ)
    run(["git", "clone", "-q", str(orchestrator), str(gpu_clone)], tmp_path, os.environ)
    run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "local", "url", str(remote)], gpu_clone, os.environ)
    home = orchestrator / project

    prefect_port, mlflow_port = free_port(), free_port()
    env = clone_env(orchestrator)
    rlhf = [sys.executable, "-m", "flows.cli"]
    try:
        up = rlhf + ["stack", "up", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port),
                     "--pool", "rlhf-cpu"]  # the GPU pool is served by the second clone only
        out = run(up, orchestrator, env)
        urls = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line.startswith("export "))
        assert urls == {"PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
                        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}"}
        assert "worker-rlhf-cpu: started" in out and "prefect-server: started" in out
        assert "prefect-server: already running" in run(up, orchestrator, env)  # idempotent
        gpu_env = clone_env(gpu_clone, **urls)
        assert "worker-rlhf-gpu: started" in run(rlhf + ["stack", "worker", "rlhf-gpu"], gpu_clone, gpu_env)
        status = run(rlhf + ["stack", "status"], orchestrator, env)
        assert all(f"{name} " in status for name in ("prefect-server", "mlflow-server", "worker-rlhf-cpu"))

        watched = run([str(Path(sys.executable).with_name("prefect")), "deployment", "run", "rlhf/full-pipeline",
                       "--watch", *([] if project == "." else ["-p", f"project={project}"])], orchestrator,
                      {**env, **urls}, timeout=1500)
        assert "Completed" in watched

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: urls["PREFECT_API_URL"]}), get_client(sync_client=True) as c:
            outcomes = [json.loads(a.data.strip().removeprefix("```json").removesuffix("```"))
                        for a in c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["stage-outcome"])))]
        ran_in = {o["stage"]: o["clone"] for o in outcomes}
        assert ran_in == {s: str((gpu_clone if s in GPU_STAGES else orchestrator) / project)
                          for s in stage_order(home / "dvc.yaml")}

        assert (home / "artifacts/evaluate").is_dir() and (home / "artifacts/ppo/model/config.json").is_file()
        status = run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], home, env)
        assert "Data and pipelines are up to date" in status, status
        if project != ".":
            assert (gpu_clone / project / "notes/extra.txt").is_file()  # pulled by the worker that ran sft

        mlflow.set_tracking_uri(urls["MLFLOW_TRACKING_URI"])
        runs = mlflow.search_runs(experiment_names=["workers"], output_format="list")
        finished = {r.data.tags.get("stage") for r in runs if r.info.status == "FINISHED"}
        assert finished >= set(stage_order(home / "dvc.yaml"))
    finally:
        mlflow.set_tracking_uri(None)
        for clone in (gpu_clone, orchestrator):
            if clone.is_dir():
                subprocess.run(rlhf + ["stack", "down"], cwd=clone, env=clone_env(clone), capture_output=True)
    assert not [p for p in (orchestrator / ".state/stack").glob("*.json") if p.stem != "urls"]
