"""The short summary printed after a pipeline run."""

from __future__ import annotations

import json
import os
from pathlib import Path

from flows.dag import stage_order
from rlhf.paths import Paths

KEY_METRICS = {
    "data": ["sft_demos_helpfulness_gold", "sft_demos_safety_gold", "bayes_optimal_accuracy"],
    "validate": ["files_validated", "n_problems"],
    "tokenizer": ["vocab_size", "chars_per_token_heldout"],
    "sft": ["helpfulness_gold", "safety_gold", "heldout_loss"],
    "reward": ["preference_accuracy", "preference_accuracy_gold", "preference_accuracy_over_bayes"],
    "ppo": ["objective/scores", "objective/kl"],
    "dpo": ["rewards/accuracies", "heldout_accuracy"],
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
            columns = {"helpfulness": "helpfulness_gold", "safety": "safety_gold",
                       "ppo_score": "eval/proxy/ppo_score", "rm_score": "eval/proxy/rm_score",
                       "kl_to_ref": "kl_to_ref"}
            print(f"  {stage:<10} {'policy':<7} " + "  ".join(f"{c:>10}" for c in columns))
            for policy, m in metrics.items():
                if isinstance(m, dict):
                    row = [m.get(k) for k in columns.values()]
                    print(f"  {'':<10} {policy:<7} " + "  ".join(f"{_fmt(v):>10}" for v in row))
            continue
        shown = {k: metrics[k] for k in KEY_METRICS.get(stage, []) if k in metrics}
        print(f"  {stage:<10} " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///.state/mlflow.db")
    print("\nOutputs: artifacts/ (DVC-tracked), metrics/*.json (`dvc metrics show`)")
    print("MLflow UI:  .venv/bin/mlflow ui --backend-store-uri " + uri + " --port 5000")
    print("            then open http://127.0.0.1:5000 (experiment 'rlhf')\n")
