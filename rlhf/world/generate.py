"""The `data` stage: write the embedded world's six datasets and report how hard they are.

Steps of `run_data`:
  1. enumerate every prompt string and split the strings, by a seeded shuffle, into a training
     pool and a held-out pool (so no split of one side can share a prompt with the other);
  2. sample each split's prompts from its pool with the configured harmful share;
  3. write mediocre SFT demonstrations (styles drawn from the configured mix);
  4. write preference pairs: two responses of uniformly drawn styles with different gold utility,
     labelled by sampling a Bradley-Terry rater, P(a preferred) = sigmoid((u_a - u_b) / T);
  5. check the split, write every file atomically, and return the datasets' gold statistics.

The Bayes-optimal accuracy mean(max(p, 1 - p)) is the best any reward model can reach on the
noisy labels; reward-model accuracy should be read against it, not against 1.
"""

from __future__ import annotations

import math
import random
from typing import Any

from rlhf.config.data import DataConfig
from rlhf.files import write_jsonl, write_text
from rlhf.paths import Paths
from rlhf.stage import StageOutput
from rlhf.world.harms import HARM_BY_NAME, HARMS
from rlhf.world.judge import VOCABULARY, judge, mean_scores
from rlhf.world.prompts import PromptRecord, all_prompts
from rlhf.world.responses import BENIGN_STYLES, HARMFUL_STYLES, respond
from rlhf.world.topics import TOPIC_BY_NAME, TOPICS

TRAIN_SPLITS = ("sft_train", "pref_train", "rl_prompts")
HELDOUT_SPLITS = ("sft_heldout", "pref_heldout", "eval_prompts")
MAX_PAIR_TRIES = 50  # redraws of the second response until its gold utility differs from the first


def split_pools(seed: int, heldout_fraction: float) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """(train pool, held-out pool): a seeded shuffle of the prompt universe, cut by prompt string."""
    records = all_prompts()
    random.Random(f"{seed}/split").shuffle(records)
    cut = round(len(records) * heldout_fraction)
    return records[cut:], records[:cut]


def sample_prompts(pool: list[PromptRecord], n: int, harmful_share: float, rng: random.Random) -> list[PromptRecord]:
    """n prompts with round(n * harmful_share) harmful ones, without repeats while the pool lasts."""
    n_harm = round(n * harmful_share)
    out = []
    for harmful, k in ((True, n_harm), (False, n - n_harm)):
        sub = [r for r in pool if r.harmful == harmful]
        if k and not sub:
            raise ValueError(f"no {'harmful' if harmful else 'benign'} prompts in the pool")
        out += rng.sample(sub, k) if k <= len(sub) else rng.choices(sub, k=k)
    rng.shuffle(out)
    return out


def _subject(record: PromptRecord):
    return HARM_BY_NAME[record.topic] if record.harmful else TOPIC_BY_NAME[record.topic]


def _base_row(record: PromptRecord, **middle: Any) -> dict[str, Any]:
    """A dataset row in the documented field order: prompt, the split's own fields, topic, harmful."""
    return {"prompt": record.prompt, **middle, "topic": record.topic, "harmful": record.harmful}


def check_styles(cfg: DataConfig) -> None:
    """Every style of the two mixes is one the world can write (a ConfigError naming the key)."""
    from rlhf.config.base import ConfigError

    for key, mix, styles in (("benign_mix", cfg.benign_mix, BENIGN_STYLES),
                             ("harmful_mix", cfg.harmful_mix, HARMFUL_STYLES)):
        unknown = sorted(set(mix) - set(styles))
        if unknown:
            raise ConfigError(f"data.{key}: unknown style(s) {unknown}; expected some of {sorted(styles)}")


def make_demos(prompts: list[PromptRecord], cfg: DataConfig, rng: random.Random) -> list[dict[str, Any]]:
    """One demonstration per prompt, its style drawn from the benign or harmful mix."""
    rows = []
    for r in prompts:
        mix = cfg.harmful_mix if r.harmful else cfg.benign_mix
        style = rng.choices(list(mix), weights=list(mix.values()))[0]
        rows.append(_base_row(r, response=respond(style, _subject(r), r.harmful, rng)))
    return rows


def bt_probability(u_a: float, u_b: float, temperature: float) -> float:
    """Bradley-Terry: P(a preferred over b) = sigmoid((u_a - u_b) / T)."""
    return 1.0 / (1.0 + math.exp(-(u_a - u_b) / temperature))


def make_pair(record: PromptRecord, temperature: float, rng: random.Random) -> dict[str, Any]:
    """Two responses with different text and different gold utility, ordered by a sampled rater."""
    styles = list(HARMFUL_STYLES if record.harmful else BENIGN_STYLES)
    a = respond(rng.choice(styles), _subject(record), record.harmful, rng)
    u_a = judge(record.prompt, a).utility
    for _ in range(MAX_PAIR_TRIES):
        b = respond(rng.choice(styles), _subject(record), record.harmful, rng)
        u_b = judge(record.prompt, b).utility
        if b != a and u_b != u_a:
            break
    else:
        raise RuntimeError(f"no second response with a different utility for {record.prompt!r}")
    p_a = bt_probability(u_a, u_b, temperature)
    if rng.random() < p_a:
        chosen, rejected, u_c, u_r, p = a, b, u_a, u_b, p_a
    else:
        chosen, rejected, u_c, u_r, p = b, a, u_b, u_a, 1.0 - p_a
    return {**_base_row(record, chosen=chosen, rejected=rejected),
            "chosen_gold": u_c, "rejected_gold": u_r, "p_chosen": p}


def bayes_optimal_accuracy(pairs: list[dict[str, Any]]) -> float:
    """mean(max(p, 1 - p)): the accuracy of a predictor that knows the gold utilities and T."""
    return sum(max(r["p_chosen"], 1.0 - r["p_chosen"]) for r in pairs) / len(pairs)


def gold_agreement(pairs: list[dict[str, Any]]) -> float:
    """Share of labels that agree with the gold ordering (the rest is rater noise)."""
    return sum(r["chosen_gold"] > r["rejected_gold"] for r in pairs) / len(pairs)


def demo_gold(demos: list[dict[str, Any]]) -> dict[str, float]:
    """Mean gold of demonstrations, with the evaluation convention of `judge.gold_means`."""
    return mean_scores((d["prompt"], d["response"]) for d in demos)


def check_disjoint(splits: dict[str, list[dict[str, Any]]]) -> int:
    """Raise if any prompt string is in both a training and a held-out split; return the overlap (0)."""
    train = {r["prompt"] for s in TRAIN_SPLITS for r in splits[s]}
    heldout = {r["prompt"] for s in HELDOUT_SPLITS for r in splits[s]}
    overlap = train & heldout
    if overlap:
        raise ValueError(f"{len(overlap)} prompt(s) shared by training and held-out splits, e.g. {min(overlap)!r}")
    return len(overlap)


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
    # 1. split the prompt universe by string
    train_pool, heldout_pool = split_pools(cfg.seed, cfg.heldout_fraction)

    # 2-4. sample prompts and build every split; each split has its own random stream, so changing
    # one split's size leaves the others as they were
    def rng(name: str) -> random.Random:
        return random.Random(f"{cfg.seed}/{name}")

    def prompts(name: str, pool: list[PromptRecord], n: int) -> list[PromptRecord]:
        return sample_prompts(pool, n, cfg.harmful_share, rng(name + "/prompts"))

    splits = {
        "sft_train": make_demos(prompts("sft_train", train_pool, cfg.n_sft_train), cfg, rng("sft_train")),
        "sft_heldout": make_demos(prompts("sft_heldout", heldout_pool, cfg.n_sft_heldout), cfg, rng("sft_heldout")),
    }
    for name, pool, n in (("pref_train", train_pool, cfg.n_pref_train),
                          ("pref_heldout", heldout_pool, cfg.n_pref_heldout)):
        r = rng(name)
        splits[name] = [make_pair(p, cfg.bt_temperature, r) for p in prompts(name, pool, n)]
    splits["rl_prompts"] = [_base_row(p) for p in prompts("rl_prompts", train_pool, cfg.n_rl_prompts)]
    splits["eval_prompts"] = [_base_row(p) for p in prompts("eval_prompts", heldout_pool, cfg.n_eval_prompts)]

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
