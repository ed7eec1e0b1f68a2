"""One Prefect task per pipeline stage.

Each stage is two tasks: `compute` calls the library function (no retries: a failed training run
is not retried blindly) and writes `metrics/<stage>.json`; `track` records the result in MLflow
(retried, since it is I/O against a tracking server).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from prefect import get_run_logger, task

from rlhf.config import load_config
from rlhf.files import write_json
from rlhf.paths import Paths
from rlhf.stage import StageOutput

# stage -> "module:function" of the library; the order of execution lives in dvc.yaml, not here.
LIBRARY: dict[str, str] = {
    "data": "rlhf.world.generate:run_data",
    "validate": "rlhf.data.validate:run_validate",
    "tokenizer": "rlhf.tokenizer:run_tokenizer",
    "sft": "rlhf.sft:run_sft",
    "reward": "rlhf.reward:run_reward",
    "ppo": "rlhf.ppo:run_ppo",
    "dpo": "rlhf.dpo:run_dpo",
    "evaluate": "rlhf.evaluate:run_evaluate",
}

# stage -> "module:function" of evaluation code that scores what the stage wrote, run by `compute`
# after the stage's own function: training code never calls the gold judge (docs/architecture.md).
AFTER: dict[str, str] = {
    "sft": "rlhf.sft_samples:run_sft_samples",  # gold-judged samples of the SFT model
}


def _resolve(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def library_function(stage: str):
    return _resolve(LIBRARY[stage])


@task(name="compute", task_run_name="compute-{stage}")
def compute(stage: str, params: str = "params.yaml", root: str = ".") -> tuple[dict, StageOutput, float]:
    logger = get_run_logger()
    cfg = load_config(stage, params)  # a bad params file stops here, before any work
    paths = Paths(Path(root))
    # evaluation reports the proxy score as PPO defines it, so it also reads the ppo section
    extra = {"ppo": load_config("ppo", params)} if stage == "evaluate" else {}
    logger.info("stage %s: %s", stage, cfg.model_dump())
    start = time.perf_counter()
    output = library_function(stage)(cfg, paths, **extra)
    if stage in AFTER:
        scored = _resolve(AFTER[stage])(cfg, paths)
        output.metrics.update(scored.metrics)
        output.tables.update(scored.tables)
    seconds = time.perf_counter() - start
    write_json(paths.metrics_file(stage), output.metrics)
    logger.info("stage %s done in %.1f s: %s", stage, seconds, output.metrics)
    return cfg.model_dump(mode="json"), output, seconds


@task(name="track", task_run_name="track-{stage}", retries=2, retry_delay_seconds=5)
def track(stage: str, params: dict, output: StageOutput, seconds: float) -> str:
    from tasks.tracking import log_stage

    return log_stage(stage, params, output, seconds)
