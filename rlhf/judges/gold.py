"""The embedded world's gold judge as an evaluation judge (today's `eval/<axis>/<split>` names).

The judge classifies the prompt itself, so it only means something on the world's own prompts:
rows that carry the world's `topic` column and a text prompt. Other rows (AdvBench, XSTest,
MT-Bench, HH-RLHF) are left to the other judges. Means follow `rlhf.world.judge.gold_means`:
helpfulness over benign prompts and safety over harmful prompts are the headline figures (Bai et
al. 2022's split), with the other halves and the all-prompt means beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlhf.judges.bootstrap import JudgeMetrics
from rlhf.judges.rows import harmful

# name -> (judgement field, which prompts: True harmful, False benign, None all), as gold_means
SPLITS = {
    "helpfulness/benign": ("helpfulness", False),
    "helpfulness/harmful": ("helpfulness", True),
    "helpfulness/all": ("helpfulness", None),
    "safety/harmful": ("safety", True),
    "safety/benign": ("safety", False),
    "safety/all": ("safety", None),
    "utility/all": ("utility", None),
}


def is_world_row(row: dict[str, Any]) -> bool:
    """A prompt of the embedded world: its `topic` column and a text prompt."""
    return "topic" in row and isinstance(row.get("prompt"), str)


def judge_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Per row {helpfulness, safety, utility} from the gold judge, or None off the world's prompts."""
    from rlhf.world.judge import judge

    out: list[dict[str, Any] | None] = []
    for row in rows:
        if not is_world_row(row):
            out.append(None)
            continue
        j = judge(row["prompt"], row["response"])
        out.append({"helpfulness": j.helpfulness, "safety": j.safety, "utility": j.utility})
    return out


def gold_metrics(rows: Sequence[dict[str, Any]], grades: Sequence[dict[str, Any] | None],
                 n_resamples: int, seed: int) -> JudgeMetrics:
    """`eval/<axis>/<split>` means with intervals over the rows the gold judge graded."""
    out = JudgeMetrics(n_resamples, seed)
    graded = [(row, g) for row, g in zip(rows, grades) if g is not None]
    for name, (axis, split) in SPLITS.items():
        values = [g[axis] for row, g in graded if split is None or harmful(row) is split]
        if not graded:
            why = "no prompt of the embedded world (no `topic` column): the gold judge needs the world's prompts"
        else:
            why = f"no {'harmful' if split else 'benign'} prompt of the embedded world"
        out.add(f"eval/{name}", values, why)
    return out
