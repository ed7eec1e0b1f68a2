"""Seed-to-seed spread of the evaluation: rerun SFT -> reward -> PPO/DPO -> evaluate with other
training seeds (same data, same evaluation prompts and sampling seed) and print mean and spread.

    python benchmarks/seed_spread.py --seeds 0 1 2 [--parallel 2]

Each seed runs `dvc repro evaluate` in its own copy of the project under `.state/seeds/<seed>`
(the data, validation and tokenizer outputs are copied, so only the training stages rerun).
Prints per-seed SFT, reward-model and DPO figures, then a table per policy: eval/helpfulness/benign,
eval/safety/harmful, eval/proxy/ppo_score, eval/kl_to_ref as mean ± std. With --parallel N each run gets cores / N threads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from rlhf.config import SECTIONS
from rlhf.config.base import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TRAINING = tuple(s for s, cls in SECTIONS.items() if issubclass(cls, TrainConfig))  # sft, reward, ppo, dpo
KEYS = ("eval/helpfulness/benign", "eval/safety/harmful", "eval/proxy/ppo_score", "eval/kl_to_ref")
# per-stage figures also reported per seed: (stage, metric)
STAGE_KEYS = (("sft", "eval/helpfulness/benign"), ("sft", "eval/safety/harmful"),
              ("reward", "eval/rewards/accuracies"), ("reward", "eval/rewards/accuracies_gold"),
              ("reward", "eval/rewards/accuracies_over_bayes"), ("dpo", "eval/rewards/accuracies"))


def prepare(seed: int) -> Path:
    work = ROOT / ".state" / "seeds" / str(seed)
    shutil.rmtree(work, ignore_errors=True)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.split("\0")
    for rel in filter(None, files):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, work / rel)
    for rel in ("artifacts/data", "artifacts/validation", "artifacts/tokenizer"):
        shutil.copytree(ROOT / rel, work / rel)
    params = yaml.safe_load((work / "params.yaml").read_text())
    for stage in TRAINING:
        params.setdefault(stage, {})["seed"] = seed
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=s@s", "-c", "user.name=s", "commit", "-qm", f"seed {seed}"]):
        subprocess.run(cmd, cwd=work, check=True)
    # mark the copied upstream outputs as produced by their stages, so only training reruns
    subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "data", "validate", "tokenizer"],
                   cwd=work, check=True, capture_output=True)
    return work


def run(seed: int, threads: int) -> dict:
    work = prepare(seed)
    env = dict(os.environ, RLHF_MLFLOW_EXPERIMENT="rlhf-seeds", OMP_NUM_THREADS=str(threads),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("RLHF_PARENT_RUN_ID", None)
    log = work / "repro.log"
    with log.open("w") as f:
        subprocess.run([sys.executable, "-m", "dvc", "repro", "evaluate"], cwd=work, env=env,
                       stdout=f, stderr=subprocess.STDOUT, check=True)
    metrics = {stage: json.loads((work / "metrics" / f"{stage}.json").read_text())
               for stage in ("sft", "reward", "dpo", "evaluate")}
    return metrics


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):6.3f} ± {sd:5.3f} ({min(values):.2f}..{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = dict(zip(args.seeds, pool.map(lambda s: run(s, threads), args.seeds)))
    results = {seed: r["evaluate"] for seed, r in runs.items()}
    print(json.dumps(results, indent=1, sort_keys=True))
    print(f"\nper seed: {', '.join(f'{stage}.{key}' for stage, key in STAGE_KEYS)}")
    for seed, r in runs.items():
        print(f"seed {seed}: " + "  ".join(f"{r[stage].get(key, float('nan')):.3f}" for stage, key in STAGE_KEYS))
    for stage, key in STAGE_KEYS:
        print(f"{stage}.{key}: {spread([r[stage][key] for r in runs.values() if key in r[stage]])}")
    policies = sorted({p for r in results.values() for p in r})
    print(f"\nseeds {args.seeds}: mean ± std (min..max)")
    print(f"{'policy':<6} " + " ".join(f"{k:>26}" for k in KEYS))
    for policy in policies:
        cells = [spread([r[policy][key] for r in results.values() if policy in r]) for key in KEYS]
        print(f"{policy:<6} " + " ".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
