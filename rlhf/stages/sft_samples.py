"""Gold-judged samples of the SFT model: what the `sft` stage reports beside its losses.

Evaluation code, run by the sft task after `rlhf.stages.sft.run_sft` (`tasks.stages.AFTER`): the gold
judge (`rlhf.world.judge`) is called only by the data stage and by evaluation, never by training
code (docs/architecture.md), so `rlhf/stages/sft.py` does not know it exists. The model is read back from
`paths.sft/"model"`, the directory the stage wrote and users load, and answers `cfg.sample_count`
held-out prompts (fixed seed) with the `sft.sample_*` settings.
"""

from __future__ import annotations

import json
import random
from typing import Any

from rlhf.config.sft import SFTConfig
from rlhf.files import read_jsonl
from rlhf.generation import generate
from rlhf.paths import Paths
from rlhf.stage import StageOutput, have
from rlhf.train import load_causal_lm, load_tokenizer, make_accelerator


def sample_and_judge(policy: Any, tokenizer: Any, rows: list[dict[str, Any]], cfg: SFTConfig,
                     accelerator: Any) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Answer `cfg.sample_count` of `rows` (held-out prompts): EOS share and length always, and on the
    embedded world's prompts (rows with its `topic` column) gold scores of answers and demonstrations.
    Metrics follow `rlhf.world.judge.gold_means` (`eval/helpfulness/benign`,
    `eval/safety/harmful`, ...); `eval/reference/*` is the same for the demonstrations."""
    from rlhf.world.judge import judge, mean_scores

    picked = random.Random(cfg.seed).sample(rows, min(cfg.sample_count, len(rows)))
    prompts = [r["prompt"] for r in picked]
    policy.eval()
    with accelerator.autocast():
        samples = generate(policy, tokenizer, prompts, max_new_tokens=cfg.sample_max_new_tokens,
                           temperature=cfg.sample_temperature, top_p=cfg.sample_top_p, seed=cfg.seed,
                           budget_key="sft.sample_max_new_tokens")
    metrics = {
        "policy/eos_share": float(samples.ended.float().mean()),
        "policy/response_length": float(samples.response_mask.sum(1).float().mean()),
    }
    table = [{"prompt": json.dumps(p) if not isinstance(p, str) else p, "response": t}
             for p, t in zip(prompts, samples.texts)]
    if not have(picked, "topic"):  # not the embedded world's prompts: the gold judge cannot read them
        return metrics, table
    scores = mean_scores(zip(prompts, samples.texts))
    reference = mean_scores((r["prompt"], r["response"]) for r in picked)
    for row, prompt, text in zip(table, prompts, samples.texts):
        j = judge(prompt, text)
        row |= {"helpfulness": j.helpfulness, "safety": j.safety, "harmful": j.harmful}
    metrics |= {
        **{f"eval/{k}": v for k, v in scores.items()},
        **{f"eval/reference/{k}": v for k, v in reference.items()},  # the demonstrations themselves
    }
    return metrics, table


def run_sft_samples(cfg: SFTConfig, paths: Paths) -> StageOutput:
    """The gold sample metrics and the `sft_samples.json` table of the trained SFT model; empty
    with `sft.sample_count: 0`, and on every process but the main one (sampling is not sharded)."""
    if not cfg.sample_count:
        return StageOutput(metrics={})
    accelerator = make_accelerator(cfg.mixed_precision)  # the device and autocast the stage trained with
    if not accelerator.is_main_process:
        return StageOutput(metrics={})
    model_dir = paths.sft / "model"
    policy = load_causal_lm(model_dir).to(accelerator.device)
    metrics, table = sample_and_judge(policy, load_tokenizer(model_dir), read_jsonl(paths.sft_heldout), cfg,
                                      accelerator)
    return StageOutput(metrics=metrics, tables={"sft_samples.json": table})
