"""The `evaluate` stage: every trained policy answers the held-out eval prompts, scored three ways.

For each policy that exists (SFT always; PPO and DPO unless their stage was disabled), with the
same seed and sampling settings for all:
  - gold helpfulness and safety (1-5) from the world's gold judge, averaged as the judge's
    `mean_scores` does: helpfulness over benign prompts, safety over harmful prompts (Bai et al.
    2022's split), with the other halves and the all-prompt means beside them;
  - the proxy reward-model score (normalised units) twice: as PPO optimised it (a response without
    EOS scores ppo.missing_eos_score, `rlhf.rl.penalise_missing_eos`) and as the reward model
    gives it to every response;
  - the KL to the reference (SFT) on the policy's own samples:
        KL(pi || pi_ref) ~ mean over prompts of sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)]
    with both log-probs of the tempered distributions (logits / T), as in PPO's objective/kl.
Models and inputs live on the device of the stage's accelerator (CUDA when present), and every
forward pass runs under its autocast (bf16 on CUDA, fp32 on the CPU), as in the other stages.
Only evaluation may call the gold judge (docs/architecture.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from rlhf.config.evaluate import EvaluateConfig
from rlhf.config.ppo import PPOConfig
from rlhf.files import atomic_dir, read_jsonl, write_jsonl
from rlhf.generation import generate
from rlhf.logprobs import forward_logits, logprobs_from_logits
from rlhf.paths import Paths
from rlhf.reward import RewardModel
from rlhf.rl import penalise_missing_eos
from rlhf.stage import StageOutput, is_skipped
from rlhf.train import load_causal_lm, load_tokenizer, make_accelerator
from rlhf.train.checkpoint import STAGE_CONFIG


def policy_dirs(paths: Paths) -> dict[str, Path]:
    """{name: model dir} of the policies to evaluate; a stage that wrote SKIPPED (or no model) is left out."""
    found = {}
    for name, stage_dir in (("sft", paths.sft), ("ppo", paths.ppo), ("dpo", paths.dpo)):
        model = stage_dir / "model"
        if not is_skipped(stage_dir) and (model / "config.json").is_file():
            found[name] = model
    assert "sft" in found, f"no SFT model in {paths.sft / 'model'}: run the sft stage first"
    return found


def proxy_missing_eos_score(ppo: PPOConfig, policies: dict[str, Path]) -> float:
    """The `missing_eos_score` of the proxy score: the ppo section's, for every policy.

    Every policy is scored under the one proxy so that their scores compare. The PPO stage's saved
    config (stage_config.json beside its model) cannot define it alone: SFT and DPO have none, nor
    has a disabled PPO stage. Where it exists it must agree: a PPO model trained with another value
    (a stale stage) would be reported under a score it did not optimise, so it is refused.
    """
    saved = policies["ppo"] / STAGE_CONFIG if "ppo" in policies else None
    if saved is not None and saved.is_file():
        trained = json.loads(saved.read_text(encoding="utf-8")).get("missing_eos_score")
        if trained is not None and trained != ppo.missing_eos_score:
            raise ValueError(f"the PPO model in {policies['ppo']} was trained with missing_eos_score={trained}, but "
                             f"ppo.missing_eos_score is {ppo.missing_eos_score}: rerun the ppo stage")
    return ppo.missing_eos_score


@torch.no_grad()
def sequence_kl(policy: Any, reference: Any, samples: Any, temperature: float, batch_size: int) -> torch.Tensor:
    """sum_t (log pi - log pi_ref) over each sampled response, on the policy's device. Returns (N,) on the CPU."""
    out = []
    device = next(policy.parameters()).device
    prompt_len = samples.prompt_ids.shape[1]
    for i in range(0, len(samples.texts), batch_size):
        seqs = samples.sequences[i: i + batch_size].to(device)  # (b, P + R)
        attn = samples.attention_mask[i: i + batch_size].to(device)
        mask = samples.response_mask[i: i + batch_size].to(device).float()  # (b, R)
        targets = seqs[:, prompt_len:]  # (b, R)
        logp = logprobs_from_logits(forward_logits(policy, seqs, attn, temperature)[:, prompt_len - 1: -1], targets)
        ref = logprobs_from_logits(forward_logits(reference, seqs, attn, temperature)[:, prompt_len - 1: -1], targets)
        out.append(((logp - ref) * mask).sum(dim=1).cpu())  # (b,)
    return torch.cat(out)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per-policy metrics from its scored sample rows (names listed in docs/metrics.md)."""
    from rlhf.world.judge import Judgement, gold_means

    gold = gold_means([Judgement(r["helpfulness"], r["safety"], r["utility"], r.get("topic"), r["harmful"])
                       for r in rows])
    return {
        **{f"eval/{k}": v for k, v in gold.items()},
        "eval/proxy/ppo_score": _mean([r["ppo_score"] for r in rows]),
        "eval/proxy/rm_score": _mean([r["rm_score"] for r in rows]),
        "eval/kl_to_ref": _mean([r["kl_to_ref"] for r in rows]),
        "policy/response_length": _mean([r["response_tokens"] for r in rows]),
        "policy/eos_share": _mean([float(r["ended"]) for r in rows]),
    }


def run_evaluate(cfg: EvaluateConfig, paths: Paths, ppo: PPOConfig) -> StageOutput:
    """`ppo` is the ppo section of the same params: the proxy is scored as PPO defines it."""
    from rlhf.world.judge import judge

    # 0. runtime: device and precision chosen as for the training stages ('auto': CUDA with bf16
    #    autocast when present, else fp32 on the CPU). One process: evaluation is not sharded.
    accelerator = make_accelerator("auto")
    assert accelerator.num_processes == 1, "evaluation runs in one process (it is not sharded)"
    device = accelerator.device

    # 1. what to evaluate: the policies that exist, the eval prompts, the reference and the proxy RM
    policies = policy_dirs(paths)
    prompts = read_jsonl(paths.eval_prompts)[: cfg.max_prompts]
    texts = [p["prompt"] for p in prompts]
    missing_eos_score = proxy_missing_eos_score(ppo, policies)
    reference = load_causal_lm(policies["sft"]).to(device).eval()
    reward_model = RewardModel.from_pretrained(paths.reward / "model").to(device).eval()

    metrics: dict[str, dict[str, float]] = {}
    all_rows: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    for name, model_dir in policies.items():
        # 2. sample: same seed and settings for every policy
        tokenizer = load_tokenizer(model_dir)
        policy = reference if name == "sft" else load_causal_lm(model_dir).to(device).eval()
        with accelerator.autocast():
            samples = generate(policy, tokenizer, texts, max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size,
                               seed=cfg.seed, budget_key="evaluate.max_new_tokens")
            # 3. score: gold judge, proxy reward model (through text; also as PPO scores it), KL to the reference
            rm_score = torch.tensor(reward_model.score_pairs(texts, samples.texts))  # (N,)
            kl = sequence_kl(policy, reference, samples, cfg.temperature, cfg.batch_size)  # (N,)
        ppo_score = penalise_missing_eos(rm_score, samples.ended, missing_eos_score)  # (N,)
        rows = []
        for i, (row, response) in enumerate(zip(prompts, samples.texts)):
            j = judge(row["prompt"], response)
            rows.append({"policy": name, "prompt": row["prompt"], "topic": row.get("topic"),
                         "harmful": bool(row["harmful"]), "response": response,
                         "helpfulness": j.helpfulness, "safety": j.safety, "utility": j.utility,
                         "ppo_score": float(ppo_score[i]), "rm_score": float(rm_score[i]),
                         "kl_to_ref": float(kl[i]),
                         "response_tokens": int(samples.response_mask[i].sum()), "ended": bool(samples.ended[i])})
        metrics[name] = summarise(rows)
        all_rows += rows
        table += rows[: cfg.table_rows]

    # 4. every sample, for reading and for later analysis
    with atomic_dir(paths.evaluate) as tmp:
        write_jsonl(tmp / "samples.jsonl", all_rows)
    return StageOutput(
        metrics=metrics,
        inputs={"eval_prompts": paths.eval_prompts},
        reports=[paths.evaluate / "samples.jsonl"],
        tables={"eval_samples.json": table},
    )
