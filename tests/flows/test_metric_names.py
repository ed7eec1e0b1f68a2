"""The whole pipeline on a tiny world, stage by stage through Prefect and MLflow: every metric a
stage logs is listed in docs/metrics.md under that stage, and every name listed there is logged."""

import re
from pathlib import Path

import mlflow
import pytest

from flows.pipeline import stage_flow

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["data", "validate", "tokenizer", "sft", "reward", "ppo", "dpo", "evaluate"]
POLICIES = re.compile(r"sft|ppo|dpo|bon\d+")  # the first level of evaluate's nested metrics (bon<n>: best-of-n)

TINY_PARAMS = """
data: {n_sft_train: 120, n_sft_heldout: 24, n_pref_train: 96, n_pref_heldout: 32, n_rl_prompts: 16, n_eval_prompts: 12}
tokenizer: {vocab_size: 600, min_frequency: 1}
sft: {n_layer: 1, n_head: 2, n_embd: 32, n_positions: 256, max_seq_len: 256, max_steps: 6, warmup_steps: 1,
      batch_size: 4, micro_batch_size: 4, log_every: 2, checkpoint_every: 6, eval_examples: 8, sample_count: 6,
      sample_max_new_tokens: 8}
reward: {max_steps: 4, warmup_steps: 1, batch_size: 8, micro_batch_size: 8, log_every: 2, checkpoint_every: 4,
         max_seq_len: 256, norm_examples: 8}
ppo: {max_steps: 2, rollout_batch_size: 8, mini_batch_size: 4, micro_batch_size: 4, ppo_epochs: 1,
      max_new_tokens: 8, checkpoint_every: 2}
dpo: {max_steps: 2, batch_size: 8, micro_batch_size: 8, warmup_steps: 1, max_seq_len: 256, eval_batch_size: 16,
      checkpoint_every: 2}
evaluate: {max_new_tokens: 8, batch_size: 12, table_rows: 2}
"""


def documented() -> dict[str, set[str]]:
    """{stage: names} from docs/metrics.md: a `## ...` heading whose first code span names the stage
    (`all`: every stage), then table rows whose first cell lists names in code spans."""
    names: dict[str, set[str]] = {}
    stage = None
    for line in (ROOT / "docs/metrics.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            spans = re.findall(r"`([^`]+)`", line)
            stage = spans[0] if spans else None
            names.setdefault(stage, set())
        elif stage and line.startswith("|") and not line.startswith("| name") and not line.startswith("| ---"):
            first_cell = line.split("|")[1]
            names[stage].update(re.findall(r"`([^`]+)`", first_cell))
    return names


def logged(stage: str) -> set[str]:
    """The metric keys of the stage's MLflow run (final values and history alike); evaluate's
    per-policy prefix is dropped."""
    runs = mlflow.search_runs(experiment_names=["test"], output_format="list")
    (run,) = [r for r in runs if r.data.tags.get("stage") == stage]
    keys = set(run.data.metrics)
    if stage == "evaluate":
        keys = {k.split("/", 1)[1] if POLICIES.fullmatch(k.split("/", 1)[0]) else k for k in keys}
    elif stage in ("sft", "ppo", "dpo"):
        # the policy's evaluation, attached by the evaluate stage (tasks.tracking.attach_evaluation),
        # is documented under evaluate: its names are evaluate's, `eval/`-prefixed where they are not
        (evaluation,) = [r for r in runs if r.data.tags.get("stage") == "evaluate"]
        policy = {k.split("/", 1)[1] for k in evaluation.data.metrics if k.startswith(f"{stage}/")}
        # (a name the stage also logs itself, such as SFT's gold eval/helpfulness/..., stays)
        keys -= {k if k.startswith("eval/") else f"eval/{k}" for k in policy} - documented().get(stage, set())
    return keys


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory, prefect_harness):
    import os

    root = tmp_path_factory.mktemp("tiny")
    (root / "params.yaml").write_text(TINY_PARAMS)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "RLHF_MLFLOW_EXPERIMENT", "RLHF_PARENT_RUN_ID")}
    os.environ.update(MLFLOW_TRACKING_URI=uri, RLHF_MLFLOW_EXPERIMENT="test")
    os.environ.pop("RLHF_PARENT_RUN_ID", None)
    mlflow.set_tracking_uri(uri)
    try:
        for stage in STAGES:
            stage_flow(stage, str(root / "params.yaml"), str(root))
        yield root
    finally:
        mlflow.set_tracking_uri(None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.parametrize("stage", STAGES)
def test_every_logged_metric_is_documented_and_every_documented_one_logged(pipeline_runs, stage):
    docs = documented()
    expected = docs.get(stage, set()) | docs.get("all", set())
    got = logged(stage)
    assert not got - expected, f"{stage}: logged but not in docs/metrics.md: {sorted(got - expected)}"
    assert not expected - got, f"{stage}: in docs/metrics.md but never logged: {sorted(expected - got)}"
