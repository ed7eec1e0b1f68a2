"""Percentile bootstrap intervals of a mean and of a win rate, and the collector every judge uses.

The 95% percentile bootstrap (Efron & Tibshirani 1993, ch. 13): draw B resamples of the N values
with replacement, take each resample's mean, and report the 2.5% and 97.5% quantiles of those B
means beside the sample mean. A win rate is the mean of per-prompt outcomes (1 win, 0.5 tie,
0 loss), so it gets the same interval. Seeded: the same values and seed give the same interval,
without touching the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

LEVEL = 0.95  # two-sided coverage of every interval the judges report


def mean_interval(values: Sequence[float], n_resamples: int, seed: int, level: float = LEVEL
                  ) -> tuple[float, float, float]:
    """(mean, low, high) of `values`: the sample mean and its percentile bootstrap interval."""
    if len(values) == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    assert n_resamples >= 1 and 0 < level < 1
    x = torch.tensor([float(v) for v in values], dtype=torch.float64)  # (N,)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(x), (n_resamples, len(x)), generator=gen)  # (B, N)
    means = x[idx].mean(dim=1)  # (B,)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    mean = float(x.mean())
    # the quantiles of B means can miss the sample mean by rounding when every value is equal
    return mean, min(low, mean), max(high, mean)


def win_outcomes(scores: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per-prompt outcome of a response against the baseline's on the same prompt: 1 when it
    scores higher, 0.5 on a tie, 0 when lower."""
    assert len(scores) == len(baseline), "one baseline score per prompt"
    return [1.0 if s > b else 0.5 if s == b else 0.0 for s, b in zip(scores, baseline)]


def win_rate_interval(scores: Sequence[float], baseline: Sequence[float], n_resamples: int, seed: int
                      ) -> tuple[float, float, float]:
    """(win rate, low, high) against the baseline, prompt by prompt, ties counting half."""
    return mean_interval(win_outcomes(scores, baseline), n_resamples, seed)


@dataclass
class JudgeMetrics:
    """What a judge reports for one policy: `{name: mean, name_low: low, name_high: high}`, and the
    names it left out with the reason (no prompts of a set, a column the data lack, ...)."""

    n_resamples: int
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, values: Sequence[float], why_empty: str) -> None:
        """The mean of `values` with its interval, or `name` left out for `why_empty`."""
        values = [v for v in values if not math.isnan(v)]
        if not values:
            self.missing[name] = why_empty
            return
        mean, low, high = mean_interval(values, self.n_resamples, self.seed)
        self.metrics.update({name: mean, f"{name}_low": low, f"{name}_high": high})

    def add_exact(self, name: str, value: float) -> None:
        """A value known in closed form (best-of-n's KL): its interval has zero width."""
        self.metrics.update({name: value, f"{name}_low": value, f"{name}_high": value})

    def merge(self, other: "JudgeMetrics") -> None:
        self.metrics.update(other.metrics)
        self.missing.update(other.missing)
