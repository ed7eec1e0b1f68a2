"""Builders of the embedded world's six datasets (the `data` stage, rlhf/stages/data.py, runs them).

Prompt strings are split into a training and a held-out pool by a seeded shuffle; demonstrations
are drawn from configured style mixes; preference pairs are two responses of different gold
utility labelled by a sampled Bradley-Terry rater, P(a preferred) = sigmoid((u_a - u_b) / T).
The Bayes-optimal accuracy mean(max(p, 1 - p)) is the best any reward model can reach on the
noisy labels; reward-model accuracy should be read against it, not against 1.
"""

from __future__ import annotations

import math
import random
from typing import Any

from rlhf.world.harms import HARM_BY_NAME
from rlhf.world.judge import judge, mean_scores
from rlhf.world.prompts import PromptRecord, all_prompts
from rlhf.world.responses import BENIGN_STYLES, HARMFUL_STYLES, respond
from rlhf.world.topics import TOPIC_BY_NAME

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


def base_row(record: PromptRecord, **middle: Any) -> dict[str, Any]:
    """A dataset row in the documented field order: prompt, the split's own fields, topic, harmful."""
    return {"prompt": record.prompt, **middle, "topic": record.topic, "harmful": record.harmful}


def make_demos(prompts: list[PromptRecord], benign_mix: dict[str, float], harmful_mix: dict[str, float],
               rng: random.Random) -> list[dict[str, Any]]:
    """One demonstration per prompt, its style drawn from the benign or harmful mix."""
    rows = []
    for r in prompts:
        mix = harmful_mix if r.harmful else benign_mix
        style = rng.choices(list(mix), weights=list(mix.values()))[0]
        rows.append(base_row(r, response=respond(style, _subject(r), r.harmful, rng)))
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
    return {**base_row(record, chosen=chosen, rejected=rejected),
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
