"""Stages on workers: Prefect work pools, the DVC remote and one MLflow server.

`prefect.yaml` declares the flow `rlhf-stage-on-worker` once per stage (the deployment named after
the stage), each in its work pool: training and evaluation in the GPU pool, the light stages in the
CPU pool. `pipeline(dispatch=True)` hands each stage to its deployment (`dispatch`) and waits; a
worker of that pool runs `stage_on_worker` in its own clone of the repository:

1. the orchestrator's commit of the code (git fetch + checkout);
2. the orchestrator's `dvc.lock` and the small files DVC does not cache (`metrics/*.json`);
3. the outputs of the stages this one reads, from the DVC remote (`dvc pull`);
4. the stage, exactly as `dvc repro --single-item <stage>` runs it, logging to the MLflow server
   in `MLFLOW_TRACKING_URI`;
5. its outputs to the remote (`dvc push`), and its `dvc.lock` entry and metrics back to the
   orchestrator (a Prefect artifact of the flow run), which writes them and pulls the outputs, so
   its own `dvc status` is clean.

A profile's pipeline (`pipeline(project="profiles/<name>")`) runs the same way in that folder of
each clone; inputs no stage writes but `dvc add` versions (the profile's `raw.dvc`) travel through
the remote as well (`flows.dag.tracked_inputs`).

The workers share the DVC remote named in `.dvc/config` (a folder on one machine; an object store
for a cluster, see the README) and the MLflow and Prefect servers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.dag import read_stages, tracked_inputs, upstream_inputs
from flows.pipeline import StageFailed, dvc_repro
from rlhf.files import write_text

WORKER_FLOW = "rlhf-stage-on-worker"
OUTCOME_KEY = "stage-outcome"


def clone_root() -> Path:
    """The clone whose code this process runs: the folder holding the imported `flows` package."""
    import flows

    return Path(flows.__file__).resolve().parents[1]


def enter_clone() -> dict[str, str]:
    """Pull step of the stage deployments: work in the clone whose code this worker runs, as
    `dvc repro` would there."""
    root = clone_root()
    os.chdir(root)
    return {"directory": str(root)}


def project_in_repository() -> str:
    """This process's DVC project folder, relative to its repository's root ("." for the root's)."""
    top = _run("git", "rev-parse", "--show-toplevel", what="git rev-parse --show-toplevel").strip()
    return Path.cwd().resolve().relative_to(Path(top).resolve()).as_posix()


def enter_project(project: str) -> None:
    """Work in the DVC project `project` of this worker's clone (a folder, as `project_in_repository`
    gives it), as `dvc repro` would there."""
    folder = clone_root() / project
    if not (folder / "dvc.yaml").is_file():
        raise StageFailed(f"{folder} holds no dvc.yaml: the project '{project}' is not in this clone's commit")
    os.chdir(folder)


def _run(*cmd: str, what: str) -> str:
    done = subprocess.run(list(cmd), capture_output=True, text=True)
    if done.returncode != 0:
        raise StageFailed(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout


def _dvc(*args: str, what: str) -> str:
    return _run(sys.executable, "-m", "dvc", *args, what=what)


@task(name="dvc-transfer", task_run_name="dvc-{direction}-{what}", retries=2, retry_delay_seconds=10)
def transfer(direction: str, targets: list[str], what: str) -> None:
    """`dvc pull` / `dvc push` of `targets`: I/O against the remote, so retried (training never is)."""
    _dvc(direction, "--quiet", *targets, what=f"dvc {direction} {' '.join(targets)}")


def uncached_outs(stages: dict[str, dict], only: str | None = None) -> list[str]:
    """The outputs DVC keeps in the workspace only (`cache: false`: the metrics JSON files), which
    the remote does not carry; of one stage, or of all."""
    found = []
    for name, spec in stages.items():
        for key in ("outs", "metrics", "plots"):
            for out in spec.get(key, []):
                if (only is None or name == only) and isinstance(out, dict):
                    path, opts = next(iter(out.items()))
                    if isinstance(opts, dict) and opts.get("cache") is False:
                        found.append(path)
    return found


@flow(name=WORKER_FLOW, flow_run_name="{stage}-on-worker")
def stage_on_worker(stage: str, commit: str | None = None, lock: str = "", files: dict[str, str] | None = None,
                    force: bool = False, project: str = ".") -> dict[str, Any]:
    """Run one stage in this worker's clone, with the orchestrator's code, lock and inputs (module
    docstring); returns, and records as the artifact `stage-outcome`, what the orchestrator needs.
    `project`: the DVC project's folder in the repository (`profiles/real` for a profile)."""
    from prefect.artifacts import create_markdown_artifact

    logger = get_run_logger()
    # 1. the orchestrator's commit of the code
    if commit:
        subprocess.run(["git", "fetch", "--quiet", "origin"], capture_output=True)  # the commit may be here already
        _run("git", "-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", "--detach", commit,
             what=f"git checkout {commit} in {Path.cwd()}")
    enter_project(project)
    # 2. the orchestrator's dvc.lock and uncached files
    if lock:
        write_text("dvc.lock", lock)
    for path, text in (files or {}).items():
        write_text(path, text)
    # 3. inputs from the remote
    stages = read_stages()
    upstream = sorted({made_by for _, made_by in upstream_inputs(stages, stage)})
    tracked = tracked_inputs(stages, stage)  # inputs versioned with `dvc add` (a profile's raw data)
    if upstream or tracked:
        transfer("pull", upstream + tracked, "+".join(upstream + tracked))
    logger.info("stage %s on %s in %s (commit %s; inputs of %s pulled)", stage, socket.gethostname(), Path.cwd(),
                commit, upstream + tracked or "no stage")
    # 4. the stage, as dvc repro runs it
    dvc_repro(stage, force)
    # 5. outputs to the remote, and the record back
    transfer("push", [stage], stage)
    entry = _load_lock(Path("dvc.lock"))["stages"][stage]
    outcome = {"stage": stage, "lock_entry": entry, "host": socket.gethostname(), "clone": str(Path.cwd()),
               "files": {p: Path(p).read_text(encoding="utf-8") for p in uncached_outs(stages, stage) if Path(p).is_file()}}
    create_markdown_artifact(key=OUTCOME_KEY, markdown=f"```json\n{json.dumps(outcome, indent=1)}\n```",
                             description=f"stage {stage}: its dvc.lock entry and metrics, for the orchestrator")
    return outcome


def read_outcome(flow_run_id) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[OUTCOME_KEY]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    if not found:
        raise StageFailed(f"the worker's flow run {flow_run_id} completed without its {OUTCOME_KEY} artifact")
    text = found[0].data.strip()
    return json.loads(text.removeprefix("```json").removesuffix("```"))


def merge_lock(stage: str, entry: dict[str, Any], order: list[str], path: Path = Path("dvc.lock")) -> None:
    """Put `stage`'s entry into `path`, stages in dvc.yaml's order (as DVC writes the file)."""
    from dvc.utils.serialize import dumps_yaml

    data = (_load_lock(path) if path.is_file() else None) or {"schema": "2.0", "stages": {}}
    data["stages"][stage] = entry
    data["stages"] = {name: data["stages"][name] for name in order if name in data["stages"]}
    write_text(path, dumps_yaml(data))


def _load_lock(path: Path) -> dict[str, Any]:
    """dvc.lock as DVC reads it (YAML 1.2: `no` is a string and `1e-05` a number, unlike PyYAML)."""
    from dvc.utils.serialize import parse_yaml

    return parse_yaml(path.read_text(encoding="utf-8"), str(path))


@task(name="dispatch", task_run_name="dispatch-{stage}")
def dispatch(stage: str, force: bool = False) -> dict[str, Any]:
    """Run `stage` through its deployment (a worker of its pool) and wait; then take its lock entry
    and metrics into this clone and pull its outputs from the remote."""
    from prefect.deployments import run_deployment

    from flows.dag import stage_order

    logger = get_run_logger()
    commit = _run("git", "rev-parse", "HEAD", what="git rev-parse HEAD").strip()
    project = project_in_repository()
    if _run("git", "status", "--porcelain", "--untracked-files=no", "--", ":/rlhf", ":/tasks", ":/flows", "dvc.yaml",
            "params.yaml", what="git status").strip():
        logger.warning("the code or params differ from commit %s: workers run the commit, not these changes", commit)
    stages = read_stages()
    tracked = tracked_inputs(stages, stage)
    if tracked:  # inputs no stage writes reach the worker through the remote too
        transfer("push", tracked, "+".join(tracked))
    lock = Path("dvc.lock").read_text(encoding="utf-8") if Path("dvc.lock").is_file() else ""
    files = {p: Path(p).read_text(encoding="utf-8") for p in uncached_outs(stages) if Path(p).is_file()}
    run = run_deployment(f"{WORKER_FLOW}/{stage}", timeout=None, poll_interval=2,
                         parameters={"stage": stage, "commit": commit, "lock": lock, "files": files, "force": force,
                                     "project": project})
    if not run.state.is_completed():
        raise StageFailed(f"stage '{stage}' failed on its worker: {run.state.message}")
    outcome = read_outcome(run.id)
    merge_lock(stage, outcome["lock_entry"], stage_order())
    for path, text in outcome["files"].items():
        write_text(path, text)
    transfer("pull", [stage], stage)
    logger.info("stage %s ran on %s in %s; its outputs are pulled here", stage, outcome["host"], outcome["clone"])
    return outcome
