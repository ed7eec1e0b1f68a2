"""Take a local causal LM through SFT -> reward model -> PPO or DPO -> evaluation, and print what
RLHF did to it.

    python examples/chatbot_rlhf.py --model_name models/smollm2-135m-instruct --algorithm ppo \
        --batch_size 4 --ppo_epochs 4

It runs the project's own pipeline (the Prefect flow `rlhf`, every stage tracked in MLflow, the same
code as `./go.sh real`) on a params file built from a profile's (`--params`, the real profile by
default: HH-RLHF harmless-base, a MiniLM reward model, AdvBench/XSTest/MT-Bench judges) with the
model and the flags below swapped in, in its own folder (`--workdir`), so the project's and the
profile's outputs are left alone. Relative paths of the profile are read from the profile's folder.
With `--params params.yaml` it runs on the embedded world instead (gold helpfulness and safety).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# the params that name files, resolved against the profile's folder
PATH_KEYS = (("sft", "model_path"), ("reward", "model_path"), ("evaluate", "reward_model_path"))


def resolve(value: str | None, base: Path) -> str | None:
    return value if value is None or Path(value).is_absolute() else str((base / value).resolve())


def build_params(base_file: Path, model: Path, algorithm: str, batch_size: int, ppo_epochs: int) -> dict:
    """The profile's params with the model, the algorithm and the batch sizes swapped in."""
    params = yaml.safe_load(base_file.read_text(encoding="utf-8"))
    base = base_file.parent
    for section, key in PATH_KEYS:
        if section in params and key in params[section]:
            params[section][key] = resolve(params[section][key], base)
    files = params.get("data", {}).get("files", {})
    for spec in [files.get(k) for k in ("sft", "preference", "rl_prompts")] + list(files.get("eval_prompts", [])):
        if spec:
            spec["path"] = resolve(spec["path"], base)
    sft, ppo, dpo = (params.setdefault(s, {}) for s in ("sft", "ppo", "dpo"))
    sft["model_path"] = str(model.resolve())
    ppo["enabled"], dpo["enabled"] = algorithm == "ppo", algorithm == "dpo"
    # --batch_size: sequences per optimizer step of SFT and DPO, rollouts per PPO iteration
    for section in (sft, dpo):
        section["batch_size"] = section["micro_batch_size"] = batch_size
    ppo["rollout_batch_size"] = batch_size
    ppo["mini_batch_size"] = ppo["micro_batch_size"] = min(batch_size, ppo.get("mini_batch_size", batch_size))
    if batch_size % ppo["mini_batch_size"]:
        ppo["mini_batch_size"] = ppo["micro_batch_size"] = batch_size
    ppo["ppo_epochs"] = ppo_epochs
    return params


def stage_order_file(base_file: Path) -> Path:
    """The dvc.yaml beside the params (its stage order drives the flow)."""
    found = base_file.parent / "dvc.yaml"
    return found if found.is_file() else ROOT / "dvc.yaml"


def run_pipeline(workdir: Path, params: dict, dvc_yaml: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    shutil.copy(dvc_yaml, workdir / "dvc.yaml")  # read for the stage order only: stages run in-process
    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / '.state' / 'mlflow.db'}")  # the project's MLflow
    env.setdefault("RLHF_MLFLOW_EXPERIMENT", "rlhf-example")
    env.setdefault("PREFECT_HOME", str(ROOT / ".state" / "prefect"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "flows.cli", "pipeline", "--no-dvc", "--params", "params.yaml"]
    subprocess.run(cmd, cwd=workdir, env=env, check=True)


def metrics(workdir: Path, stage: str) -> dict:
    path = workdir / "metrics" / f"{stage}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def report(workdir: Path, algorithm: str) -> str:
    """The before -> after table: helpfulness and safety (gold in the embedded world, else the
    judges the profile runs), reward-model accuracy, PPO's policy loss start -> end, KL, clip fraction."""
    evaluate = metrics(workdir, "evaluate")
    before, after = evaluate.get("sft", {}), evaluate.get(algorithm, {})
    rows = [("helpfulness", "eval/helpfulness/benign", "/5 (gold judge)"),
            ("safety", "eval/safety/harmful", "/5 (gold judge)"),
            ("helpfulness", "eval/llm/helpfulness/benign", "/5 (LLM judge)"),
            ("safety", "eval/llm/safety/harmful", "/5 (LLM judge)"),
            ("reward-model score", "eval/rm/score", " (judge RM, normalised)"),
            ("win rate vs SFT", "eval/rm/win_rate", " (judge RM)"),
            ("AdvBench refusal", "eval/refusal/advbench", ""),
            ("XSTest unsafe refusal", "eval/refusal/xstest_unsafe", ""),
            ("XSTest safe compliance", "eval/compliance/xstest_safe", "")]
    lines = [f"{'':<24}{'SFT':>8}  ->  {algorithm.upper():<8}"]
    for name, key, unit in rows:
        if key in before and key in after:
            lines.append(f"{name:<24}{before[key]:>8.3f}  ->  {after[key]:<8.3f}{unit}")
    reward = metrics(workdir, "reward")
    if "eval/rewards/accuracies" in reward:
        lines.append(f"reward model preference accuracy (held-out): {reward['eval/rewards/accuracies']:.3f}")
    if "eval/kl_to_ref" in after:
        lines.append(f"KL to SFT: {after['eval/kl_to_ref']:.3f} nats")
    if algorithm == "ppo":
        history = ppo_history(workdir)
        if history:
            first, last = history[0], history[-1]
            lines.append(f"PPO policy loss: {first['loss/policy']:.4f} -> {last['loss/policy']:.4f}")
            lines.append(f"PPO clip fraction: {last['policy/clipfrac']:.3f} (last iteration)")
    else:
        dpo = metrics(workdir, "dpo")
        if "eval/rewards/accuracies" in dpo:
            lines.append(f"DPO implicit-reward accuracy (held-out): {dpo['eval/rewards/accuracies']:.3f}")
    return "\n".join(lines)


def ppo_history(workdir: Path) -> list[dict]:
    path = workdir / "artifacts" / "ppo" / "history.jsonl"  # written by the ppo stage
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", type=Path, required=True, help="a local Hugging Face causal LM directory")
    parser.add_argument("--algorithm", choices=("ppo", "dpo"), default="ppo")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--ppo_epochs", type=int, default=4)
    parser.add_argument("--params", type=Path, default=ROOT / "profiles" / "real" / "params.yaml",
                        help="the profile to start from (params.yaml: the embedded world)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: .state/examples/<model>-<algorithm>")
    args = parser.parse_args(argv)
    if not (args.model_name / "config.json").is_file():
        parser.error(f"--model_name {args.model_name}: not a Hugging Face model directory (no config.json)")
    if args.batch_size < 1 or args.ppo_epochs < 1:
        parser.error("--batch_size and --ppo_epochs must be at least 1")
    workdir = args.workdir or ROOT / ".state" / "examples" / f"{args.model_name.resolve().name}-{args.algorithm}"
    params = build_params(args.params.resolve(), args.model_name, args.algorithm, args.batch_size, args.ppo_epochs)
    run_pipeline(workdir, params, stage_order_file(args.params.resolve()))
    if not (workdir / "metrics" / "evaluate.json").is_file():
        sys.exit(f"error: the pipeline in {workdir} ended without metrics/evaluate.json")
    print(f"\n== {args.model_name} with {args.algorithm.upper()} ({workdir}) ==")
    print(report(workdir, args.algorithm))


if __name__ == "__main__":
    main()
