"""One Prefect task per pipeline stage.

Each stage is two tasks: `compute` calls the library function (no retries: a failed training run
is not retried blindly) and writes `metrics/<stage>.json`; `track` records the result in MLflow
through the outbox (`tasks.outbox`): a tracking server that is away never fails a stage that ran.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task

from rlhf.config import load_config
from rlhf.files import write_json
from rlhf.paths import Paths
from rlhf.stage import StageOutput


def _function(target: str) -> Callable[..., StageOutput]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Stage:
    """A pipeline stage as `compute` runs it. Its code is named, not imported, here: a stage's process
    imports only its own stage's modules (data, validate and tokenizer never load torch)."""

    target: str  # "rlhf.stages.<module>:run_<stage>", called as run(cfg, paths, **{section: config for section in reads})
    reads: tuple[str, ...] = ()  # other params sections it reads (dvc.yaml lists the keys it uses)
    # evaluation code that scores what the stage wrote, run after `run` ("module:function"): training
    # code never calls the gold judge (docs/architecture.md)
    after_target: str | None = None
    parallel: bool = False  # shards its work over data-parallel processes (RLHF_NUM_PROCESSES, tasks.launch)
    curves: bool = False  # trains: its history goes to plots/<stage>.json for `dvc plots`

    @property
    def run(self) -> Callable[..., StageOutput]:
        return _function(self.target)

    @property
    def after(self) -> Callable[..., StageOutput] | None:
        return None if self.after_target is None else _function(self.after_target)


# The stages, by the name of their dvc.yaml stage and params section; the order of execution lives
# in dvc.yaml. With rlhf.config.SECTIONS (name -> config class) this is all a new stage adds here.
STAGES: dict[str, Stage] = {
    "data": Stage("rlhf.stages.data:run_data"),
    "validate": Stage("rlhf.stages.validate:run_validate"),
    "tokenizer": Stage("rlhf.stages.tokenizer:run_tokenizer"),
    "sft": Stage("rlhf.stages.sft:run_sft", after_target="rlhf.stages.sft_samples:run_sft_samples",  # + gold-judged samples
                 parallel=True, curves=True),
    "reward": Stage("rlhf.stages.reward:run_reward", parallel=True, curves=True),
    "ppo": Stage("rlhf.stages.ppo:run_ppo", parallel=True, curves=True),
    "dpo": Stage("rlhf.stages.dpo:run_dpo", parallel=True, curves=True),
    "evaluate": Stage("rlhf.stages.evaluate:run_evaluate", reads=("ppo",)),  # the proxy is scored as PPO defines it
}


def library_function(stage: str) -> Callable[..., StageOutput]:
    return STAGES[stage].run


@task(name="compute", task_run_name="compute-{stage}")
def compute(stage: str, params: str = "params.yaml", root: str = ".") -> tuple[dict, StageOutput, float, dict]:
    """Run the stage's library function, its curves going to MLflow as they grow (`tasks.live`);
    returns (config, output, seconds, what `track` needs to finish the live run)."""
    from rlhf.stage import listening
    from tasks.launch import NUM_PROCESSES_ENV, num_processes, run_in_processes
    from tasks.live import LiveRun
    from tasks.outbox import new_record_id

    logger = get_run_logger()
    cfg = load_config(stage, params)  # a bad params file stops here, before any work
    paths = Paths(Path(root))
    extra = {section: load_config(section, params) for section in STAGES[stage].reads}
    logger.info("stage %s: %s", stage, cfg.model_dump())
    record_id = new_record_id(stage)
    live = LiveRun(stage, record_id, logger.warning)
    start = time.perf_counter()
    processes = num_processes()
    if processes > 1 and not STAGES[stage].parallel:
        logger.info("stage %s runs in one process (%s=%d applies to sft, reward, ppo and dpo)", stage, NUM_PROCESSES_ENV,
                    processes)
    try:
        with listening(live.row):
            if processes > 1 and STAGES[stage].parallel:  # process 0's rows reach the live run as it logs them
                output = run_in_processes(stage, params, root, processes)
            else:
                output = library_function(stage)(cfg, paths, **extra)
            after = STAGES[stage].after
            if after is not None:
                scored = after(cfg, paths)
                output.metrics.update(scored.metrics)
                output.tables.update(scored.tables)
    except BaseException as err:
        live.fail(err)  # a FAILED run that keeps the curves logged so far and the message
        raise
    seconds = time.perf_counter() - start
    write_json(paths.metrics_file(stage), output.metrics)
    if STAGES[stage].curves:
        write_json(paths.plots_file(stage), output.history)
    logger.info("stage %s done in %.1f s: %s", stage, seconds, output.metrics)
    return cfg.model_dump(mode="json"), output, seconds, {"record_id": record_id, "live": live.info()}


@task(name="track", task_run_name="track-{stage}")
def track(stage: str, params: dict, output: StageOutput, seconds: float, root: str = ".",
          tracking: dict | None = None) -> str | None:
    """Queue the stage's record in `<root>/.state`, then log that outbox (older records first;
    MLflow retries each request with bounded backoff); the record finishes the stage's live run
    (`tracking`, from `compute`). Returns the stage's run id, or None when the server is away."""
    import mlflow

    from tasks.outbox import enqueue, make_record, pending, replay
    from tasks.tracking import log_record

    record = make_record(stage, params, output, seconds, **(tracking or {}))
    path = enqueue(record, Path(root))  # first: a crash while logging leaves the record queued, never lost
    logged, error = replay(log_record, Path(root))
    if error is None:
        link_run(stage, logged[-1])
        return logged[-1]
    get_run_logger().warning(
        "stage %s ran and wrote its outputs, but MLflow at %s is unreachable (%s): its record waits in "
        "%s (%d queued); the next stage or `rlhf tracking sync` logs it",
        stage, mlflow.get_tracking_uri(), error, path.parent, len(pending(Path(root))))
    return None


def link_run(stage: str, run_id: str) -> None:
    """The Prefect task run links back to its MLflow run (an artifact on the flow run's page)."""
    import httpx
    import mlflow
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:  # called outside a Prefect task run (`track.fn`)
        return
    from tasks.env import experiment_name

    experiment = experiment_name()
    try:
        create_markdown_artifact(
            key=f"mlflow-{stage}",
            markdown=f"MLflow run `{run_id}` (`{stage}`) in experiment `{experiment}` at `{mlflow.get_tracking_uri()}`",
            description=f"the MLflow run of stage {stage}")
    except httpx.HTTPError as err:  # the Prefect server went away: the MLflow run is recorded all the same
        get_run_logger().warning("the Prefect server is unreachable (%s): no link to MLflow run %s", err, run_id)
