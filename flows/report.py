"""The short summary printed after a pipeline run."""

from __future__ import annotations

import json
import os
from pathlib import Path

from flows.dag import stage_order
from rlhf.paths import Paths
from tasks.env import experiment_name

KEY_METRICS = {
    "data": ["data/sft_demos/helpfulness/benign", "data/sft_demos/safety/harmful", "data/bayes_optimal_accuracy"],
    "validate": ["validate/files", "validate/problems"],
    "tokenizer": ["tokenizer/vocab_size", "tokenizer/chars_per_token_heldout"],
    "sft": ["eval/helpfulness/benign", "eval/safety/harmful", "eval/loss/sft"],
    "reward": ["eval/rewards/accuracies", "eval/rewards/accuracies_gold", "eval/rewards/accuracies_over_bayes"],
    "ppo": ["objective/scores", "objective/kl"],
    "dpo": ["eval/rewards/accuracies", "eval/rewards/accuracies_gold"],
}
# the evaluate table: column -> metric (docs/metrics.md); gold, proxy and KL first, then the optional judges
EVALUATE_COLUMNS = {
    "helpfulness": "eval/helpfulness/benign", "safety": "eval/safety/harmful",
    "ppo_score": "eval/proxy/ppo_score", "rm_score": "eval/proxy/rm_score", "kl_to_ref": "eval/kl_to_ref",
    "judge_rm": "eval/rm/score", "rm_win": "eval/rm/win_rate", "refuse_adv": "eval/refusal/advbench",
    "refuse_xs": "eval/refusal/xstest_unsafe", "comply_xs": "eval/compliance/xstest_safe",
    "llm_help": "eval/llm/helpfulness/benign", "llm_safety": "eval/llm/safety/harmful",
}


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def print_summary(root: Path = Path(".")) -> None:
    paths = Paths(root)
    print("\n== RLHF pipeline summary ==")
    for stage in stage_order(root / "dvc.yaml"):
        file = paths.metrics_file(stage)
        if not file.exists():
            print(f"  {stage:<10} (not run)")
            continue
        metrics = json.loads(file.read_text())
        if stage == "evaluate":
            policies = {p: m for p, m in metrics.items() if isinstance(m, dict)}
            # a judge's column only when some policy reports it (gold needs the world's prompts)
            columns = {c: k for c, k in EVALUATE_COLUMNS.items() if any(k in m for m in policies.values())}
            print(f"  {stage:<10} {'policy':<7} " + "  ".join(f"{c:>10}" for c in columns))
            for policy, m in policies.items():
                row = [m.get(k, "-") for k in columns.values()]
                print(f"  {'':<10} {policy:<7} " + "  ".join(f"{_fmt(v):>10}" for v in row))
            continue
        shown = {k: metrics[k] for k in KEY_METRICS.get(stage, []) if k in metrics}
        print(f"  {stage:<10} " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///.state/mlflow.db")
    print("\nOutputs: artifacts/ (DVC-tracked), metrics/*.json (`dvc metrics show`)")
    print("MLflow UI:  .venv/bin/mlflow ui --backend-store-uri " + uri + " --port 5000")
    experiment = experiment_name()
    print(f"            then open http://127.0.0.1:5000 (experiment '{experiment}')\n")
