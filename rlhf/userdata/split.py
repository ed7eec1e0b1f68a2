"""The six datasets from the user's rows: a held-out split by distinct prompt, RL and eval prompts.

Prompts are compared by `rlhf.validation.validate.prompt_key` (the text the model is conditioned
on, whitespace collapsed), the same key the `validate` stage uses to prove that no held-out prompt
is a train prompt. The split (`heldout_keys`):

  1. every prompt of an evaluation prompt set is held out (it must not be trained on);
  2. the distinct prompts of the preference pairs are shuffled (seeded) and the first
     round(heldout_fraction * n) of them are held out (at least one, and at least one left to train
     when there are two or more);
  3. the SFT prompts not seen among the pairs are split the same way, so both kinds get their share.

RL prompts are the distinct training prompts of the pairs, or the user's RL prompt file without the
held-out prompts; evaluation prompts are each configured set (column `set` = its name), then the
held-out prompts (set "heldout"), each prompt once.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rlhf.validation.validate import prompt_key

Row = dict[str, Any]


def key(row: Row) -> str:
    found = prompt_key(row["prompt"])
    assert found is not None, "rows are validated before they are split"
    return found


def heldout_keys(groups: Iterable[Iterable[str]], fraction: float, seed: int, forced: Iterable[str] = ()) -> set[str]:
    """The held-out prompt keys: `forced`, then `fraction` of each group's keys not decided before."""
    heldout = set(forced)
    decided = set(heldout)
    rng = random.Random(f"{seed}/heldout")
    for group in groups:
        rest = sorted(set(group) - decided)
        rng.shuffle(rest)
        n = round(fraction * len(rest))
        if len(rest) >= 2:
            n = min(max(n, 1), len(rest) - 1)
        heldout.update(rest[:n])
        decided.update(rest)
    return heldout


def split_rows(rows: list[Row], heldout: set[str]) -> tuple[list[Row], list[Row]]:
    """(train rows, held-out rows), each in the input order."""
    train = [r for r in rows if key(r) not in heldout]
    return train, [r for r in rows if key(r) in heldout]


def first_of_each(rows: list[Row]) -> tuple[list[Row], int]:
    """(the first row of each distinct prompt, how many later rows were dropped)."""
    seen: set[str] = set()
    out = []
    for row in rows:
        k = key(row)
        if k not in seen:
            seen.add(k)
            out.append(row)
    return out, len(rows) - len(out)


def chosen_demos(pairs: list[Row]) -> list[Row]:
    """SFT demonstrations from preference pairs: each prompt with its chosen response, once."""
    seen: set[tuple[str, str]] = set()
    demos = []
    for pair in pairs:
        item = (key(pair), pair["chosen"])
        if item not in seen:
            seen.add(item)
            demos.append({"prompt": pair["prompt"], "response": pair["chosen"]})
    return demos


@dataclass
class Splits:
    """The six datasets (names as in `rlhf.paths.Paths`) and what was left out on the way."""

    datasets: dict[str, list[Row]]
    heldout_share: float  # held-out share of the distinct prompts of the pairs and demonstrations
    dropped: dict[str, int] = field(default_factory=dict)


def build_splits(
    pairs: list[Row],
    demos: list[Row] | None,
    rl_prompts: list[Row] | None,
    eval_sets: dict[str, list[Row]],
    fraction: float,
    seed: int,
) -> Splits:
    """The six datasets from validated rows; `demos` None: the chosen responses of the pairs."""
    # pairs with an empty response (a few HH-RLHF raters preferred silence) cannot train SFT or
    # pass the validate stage's preference schema, which wants text on both sides
    kept = [p for p in pairs if p["chosen"].strip() and p["rejected"].strip()]
    dropped = {"empty_response": len(pairs) - len(kept)}
    demos = chosen_demos(kept) if demos is None else demos
    forced = {key(r) for rows in eval_sets.values() for r in rows}
    pair_keys, demo_keys = [key(p) for p in kept], [key(d) for d in demos]
    heldout = heldout_keys([pair_keys, demo_keys], fraction, seed, forced)
    data: dict[str, list[Row]] = {}
    data["sft_train"], data["sft_heldout"] = split_rows(demos, heldout)
    data["pref_train"], data["pref_heldout"] = split_rows(kept, heldout)
    if rl_prompts is None:
        data["rl_prompts"] = [{"prompt": r["prompt"]} for r in first_of_each(data["pref_train"])[0]]
        dropped["rl_heldout"] = 0
    else:
        train_rl = [r for r in rl_prompts if key(r) not in heldout]
        dropped["rl_heldout"] = len(rl_prompts) - len(train_rl)
        data["rl_prompts"], _ = first_of_each(train_rl)
    sets = [{**r, "set": name} for name, rows in eval_sets.items() for r in rows]
    held = first_of_each(data["pref_heldout"] + data["sft_heldout"])[0]
    sets += [{"prompt": r["prompt"], "set": "heldout"} for r in held]
    data["eval_prompts"], dropped["eval_repeats"] = first_of_each(sets)
    empty = [name for name, rows in data.items() if not rows]
    if empty:
        raise ValueError(f"data.heldout_fraction: no rows left for {', '.join(empty)} "
                         f"({len(set(pair_keys))} distinct preference prompts, {len(set(demo_keys))} SFT prompts, "
                         f"heldout_fraction {fraction}); give more data or change the fraction")
    distinct = set(pair_keys) | set(demo_keys)
    share = len(distinct & heldout) / len(distinct)
    return Splits(data, share, dropped)
