"""Prefect flows: `rlhf-stage` (one stage, as DVC runs it) and `rlhf` (the full pipeline).

`rlhf` follows the stage order declared in `dvc.yaml`. By default each stage goes through
`dvc repro --single-item <stage>`, so DVC skips what is up to date and records what it ran;
with `use_dvc=False` the stages' tasks run in this process (no caching), for a machine without DVC
state or a quick deployment test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.dag import check_inputs, stage_order
from flows.prefect_api import mark_finished
from rlhf.errors import UserError
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


def _api_url() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)


@task(name="dvc-repro", task_run_name="dvc-repro-{stage}")
def dvc_repro(stage: str, force: bool = False) -> None:
    """Run one DVC stage (skipped by DVC when its deps, params and outs are unchanged)."""
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    logger.info("$ %s", " ".join(cmd[2:]))
    env = os.environ.copy()
    env.setdefault("PREFECT_API_URL", _api_url())  # stage flows report to this flow's server
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:  # the stage printed its own error above; say which stage, once
        raise StageFailed(f"stage '{stage}' failed (dvc repro exited with {result.returncode}; its error is above)")


@flow(name="rlhf", flow_run_name="pipeline-{params}")
def pipeline(
    params: str = "params.yaml",
    use_dvc: bool = True,
    force: bool = False,
    only: list[str] | None = None,
) -> list[str]:
    """Run the stages of `dvc.yaml` in order; returns the stage names run (or checked by DVC)."""
    from tasks.tracking import pipeline_run

    stages = [s for s in stage_order() if only is None or s in only]
    with pipeline_run(f"pipeline-{datetime.now():%Y%m%d-%H%M%S}", get_run_logger().warning):
        for stage in stages:
            if use_dvc:
                dvc_repro(stage, force)
            elif stage not in STAGES:  # a shell command of dvc.yaml (a profile's model import)
                get_run_logger().info("stage %s is a command that runs under DVC only: skipped", stage)
            else:
                check_inputs(stage, makers=STAGES)
                cfg, output, seconds, tracking = compute(stage, params)
                track(stage, cfg, output, seconds, tracking=tracking)
    mark_finished("pipeline")
    return stages
