"""Prefect flows: `rlhf-stage` (one stage, as DVC runs it) and `rlhf` (the full pipeline).

`rlhf` follows the stage order declared in `dvc.yaml`. By default each stage goes through
`dvc repro --single-item <stage>`, so DVC skips what is up to date and records what it ran; the
stage's flow run, in the process DVC starts, nests under that task run (the pipeline's Subflow Runs),
and a stage that fails fails the pipeline with the stage's own `error:` message;
with `use_dvc=False` the stages' tasks run in this process (no caching), for a machine without DVC
state or a quick deployment test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.dag import check_inputs, stage_order
from flows.prefect_api import mark_finished
from flows.warm import warm_stages
from rlhf.errors import UserError
from tasks.child import relay
from tasks.stages import STAGES, compute, track


class StageFailed(UserError):
    """A stage run by `dvc repro` failed; the stage's process has printed why."""


@flow(name="rlhf-stage", flow_run_name="{stage}")
def stage_flow(stage: str, params: str = "params.yaml", root: str = ".") -> dict:
    check_inputs(stage, Path(root))
    cfg, output, seconds, tracking = compute(stage, params, root)
    track(stage, cfg, output, seconds, root, tracking)
    mark_finished(stage)  # the work is done, whether or not Prefect can still record it
    return output.metrics


# set by `dvc_repro` for the stage process DVC starts: the stage's flow run nests under that task run
PARENT_TASK_ENV = "RLHF_PREFECT_PARENT_TASK_RUN"


def run_stage(stage: str, params: str = "params.yaml"):
    """Run `stage_flow` for its final state; under `dvc_repro` (PARENT_TASK_ENV set) as a subflow
    run of the pipeline's flow run, so the Prefect UI shows it (and its logs) under the pipeline."""
    from uuid import UUID

    parameters = {"stage": stage, "params": params, "root": "."}
    parent = os.environ.get(PARENT_TASK_ENV)
    if parent:
        from prefect.client.orchestration import get_client
        from prefect.flow_engine import run_flow

        try:
            with get_client(sync_client=True) as client:
                flow_run = client.create_flow_run(stage_flow, name=stage, parameters=parameters,
                                                  parent_task_run_id=UUID(parent))
        except Exception:  # noqa: BLE001 - a server that cannot nest it (another server): run it on its own
            flow_run = None
        if flow_run is not None:
            return run_flow(stage_flow, flow_run=flow_run, parameters=parameters, return_type="state")
    return stage_flow(**parameters, return_state=True)


def _api_url() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)


def stage_env() -> dict[str, str]:
    """The environment of the stage commands `dvc repro` starts, less the per-stage parent task run."""
    env = os.environ.copy()
    env.setdefault("PREFECT_API_URL", _api_url())  # stage flows report to this flow's server
    return env


@task(name="dvc-repro", task_run_name="dvc-repro-{stage}")
def dvc_repro(stage: str, force: bool = False) -> None:
    """Run one DVC stage (skipped by DVC when its deps, params and outs are unchanged)."""
    from prefect.runtime import task_run

    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    logger.info("$ %s", " ".join(cmd[2:]))
    env = stage_env()
    env[PARENT_TASK_ENV] = str(task_run.id)  # ... as subflow runs of this task run
    errors: list[str] = []
    with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE) as proc:
        relay(proc.stderr, errors)
    if proc.returncode != 0:  # the stage's own message (its `error:` line), once, in Prefect too
        reason = "; ".join(errors) or "its output is above"
        raise StageFailed(f"stage '{stage}' failed (dvc repro exited with {proc.returncode}): {reason}")


def _pipeline_run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    how = "workers" if p.get("dispatch") else "dvc" if p.get("use_dvc", True) else "in-process"
    only = f"-{'+'.join(p['only'])}" if p.get("only") else ""
    project = f"{Path(p['project']).name}-" if p.get("project", ".") != "." else ""  # a profile's folder name
    return f"pipeline-{project}{Path(p.get('params', 'params.yaml')).stem}-{how}{only}{'-force' if p.get('force') else ''}" \
           f"-{datetime.now():%Y%m%d-%H%M%S}"


@flow(name="rlhf", flow_run_name=_pipeline_run_name)
def pipeline(
    params: str = "params.yaml",
    use_dvc: bool = True,
    force: bool = False,
    only: list[str] | None = None,
    dispatch: bool = False,
    project: str = ".",
) -> list[str]:
    """Run the stages of `dvc.yaml` in order; returns the stage names run (or checked by DVC).
    `dispatch`: each stage runs on a worker of its work pool (`flows.worker`), not in this process.
    `project`: the folder of the DVC project, relative to the current one (`profiles/real` from the
    repository root, where a deployment starts)."""
    from prefect.runtime import flow_run

    from tasks.tracking import pipeline_run

    if project != ".":
        if not (Path(project) / "dvc.yaml").is_file():
            raise UserError(f"project '{project}': {Path(project).resolve()} holds no dvc.yaml")
        os.chdir(project)

    stages = [s for s in stage_order() if only is None or s in only]
    with pipeline_run(flow_run.name or _pipeline_run_name(), get_run_logger().warning):  # one name in both UIs
        # stage commands DVC starts fork from a process that has imported their libraries (flows.warm)
        with warm_stages(stage_env()) if use_dvc and not dispatch else nullcontext():
            for stage in stages:
                if dispatch:
                    from flows.worker import dispatch as on_worker

                    on_worker(stage, force)
                elif use_dvc:
                    dvc_repro(stage, force)
                elif stage not in STAGES:  # a shell command of dvc.yaml (a profile's model import)
                    get_run_logger().info("stage %s is a command that runs under DVC only: skipped", stage)
                else:
                    check_inputs(stage, makers=STAGES)
                    cfg, output, seconds, tracking = compute(stage, params)
                    track(stage, cfg, output, seconds, tracking=tracking)
    mark_finished("pipeline")
    return stages
