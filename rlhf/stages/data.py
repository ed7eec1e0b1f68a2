"""The `data` stage: write the embedded world's six datasets and report how hard they are.

Steps of `run_data`:
  1. enumerate every prompt string and split the strings, by a seeded shuffle, into a training
     pool and a held-out pool (so no split of one side can share a prompt with the other);
  2. sample each split's prompts from its pool with the configured harmful share;
  3. write mediocre SFT demonstrations (styles drawn from the configured mix);
  4. write preference pairs: two responses of uniformly drawn styles with different gold utility,
     labelled by sampling a Bradley-Terry rater, P(a preferred) = sigmoid((u_a - u_b) / T);
  5. check the split, write every file atomically, and return the datasets' gold statistics.

The builders live in `rlhf.world.generate`; this file wires them to the config and the files.
"""

from __future__ import annotations

import math
import random
from typing import Any

from rlhf.config.base import ConfigError
from rlhf.config.data import DataConfig
from rlhf.files import write_jsonl, write_text
from rlhf.paths import Paths
from rlhf.stage import StageOutput
from rlhf.world.generate import (
    base_row,
    bayes_optimal_accuracy,
    check_disjoint,
    demo_gold,
    gold_agreement,
    make_demos,
    make_pair,
    sample_prompts,
    split_pools,
)
from rlhf.world.harms import HARMS
from rlhf.world.judge import VOCABULARY
from rlhf.world.prompts import PromptRecord
from rlhf.world.responses import BENIGN_STYLES, HARMFUL_STYLES
from rlhf.world.topics import TOPICS


def check_styles(cfg: DataConfig) -> None:
    """Every style of the two mixes is one the world can write (a ConfigError naming the key)."""
    for key, mix, styles in (("benign_mix", cfg.benign_mix, BENIGN_STYLES),
                             ("harmful_mix", cfg.harmful_mix, HARMFUL_STYLES)):
        unknown = sorted(set(mix) - set(styles))
        if unknown:
            raise ConfigError(f"data.{key}: unknown style(s) {unknown}; expected some of {sorted(styles)}")


def summary_markdown(metrics: dict[str, float], splits: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["# Embedded world datasets", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    pair = splits["pref_heldout"][0]
    lines += ["", "## An example preference pair (held-out)", "",
              f"- prompt: {pair['prompt']}",
              f"- chosen (u = {pair['chosen_gold']:.1f}): {pair['chosen']}",
              f"- rejected (u = {pair['rejected_gold']:.1f}): {pair['rejected']}",
              f"- P(rater picks chosen) = {pair['p_chosen']:.3f}", ""]
    return "\n".join(lines)


def run_data(cfg: DataConfig, paths: Paths) -> StageOutput:
    check_styles(cfg)
    mixes = (cfg.benign_mix, cfg.harmful_mix)
    # 1. split the prompt universe by string
    train_pool, heldout_pool = split_pools(cfg.seed, cfg.heldout_fraction)

    # 2-4. sample prompts and build every split; each split has its own random stream, so changing
    # one split's size leaves the others as they were
    def rng(name: str) -> random.Random:
        return random.Random(f"{cfg.seed}/{name}")

    def prompts(name: str, pool: list[PromptRecord], n: int) -> list[PromptRecord]:
        return sample_prompts(pool, n, cfg.harmful_share, rng(name + "/prompts"))

    splits = {
        "sft_train": make_demos(prompts("sft_train", train_pool, cfg.n_sft_train), *mixes, rng("sft_train")),
        "sft_heldout": make_demos(prompts("sft_heldout", heldout_pool, cfg.n_sft_heldout), *mixes, rng("sft_heldout")),
    }
    for name, pool, n in (("pref_train", train_pool, cfg.n_pref_train),
                          ("pref_heldout", heldout_pool, cfg.n_pref_heldout)):
        r = rng(name)
        splits[name] = [make_pair(p, cfg.bt_temperature, r) for p in prompts(name, pool, n)]
    splits["rl_prompts"] = [base_row(p) for p in prompts("rl_prompts", train_pool, cfg.n_rl_prompts)]
    splits["eval_prompts"] = [base_row(p) for p in prompts("eval_prompts", heldout_pool, cfg.n_eval_prompts)]

    # 5. check, write, measure
    overlap = check_disjoint(splits)
    for name, rows in splits.items():
        write_jsonl(getattr(paths, name), rows)

    gold = demo_gold(splits["sft_train"])
    demos = splits["sft_train"]
    metrics: dict[str, float] = {
        "data/bayes_optimal_accuracy": bayes_optimal_accuracy(splits["pref_heldout"]),
        "data/bayes_optimal_accuracy_train": bayes_optimal_accuracy(splits["pref_train"]),
        "data/label_gold_agreement": gold_agreement(splits["pref_heldout"]),
        "data/label_gold_agreement_train": gold_agreement(splits["pref_train"]),
        **{f"data/sft_demos/{k}": v for k, v in gold.items()},
        "data/sft_demos/harmful_share": sum(d["harmful"] for d in demos) / len(demos),
        **{f"rows/{name}": float(len(rows)) for name, rows in splits.items()},
        "data/prompt_overlap": float(overlap),
        "world/topics": float(len(TOPICS)),
        "world/harm_categories": float(len(HARMS)),
        "world/prompt_strings": float(len(train_pool) + len(heldout_pool)),
        "world/vocabulary_words": float(len(VOCABULARY)),
    }
    # a split without harmful (or benign) prompts has no safety (or helpfulness) mean: leave it out
    # rather than write NaN into metrics/data.json
    metrics = {k: v for k, v in metrics.items() if not math.isnan(v)}
    summary = paths.data / "summary.md"
    write_text(summary, summary_markdown(metrics, splits))
    return StageOutput(metrics=metrics, inputs={}, reports=[summary],
                       tables={"pref_heldout_sample.json": splits["pref_heldout"][:20]})
