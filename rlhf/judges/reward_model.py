"""A reward model as an evaluation judge: mean score and win rate against SFT, over every prompt.

Any local reward-model directory serves (`RewardModel.from_pretrained`): the pipeline's own
(`artifacts/reward/model`, the proxy PPO optimised) or an independent one, e.g. trained on a
disjoint preference split, which a policy cannot have over-optimised (Gao et al. 2022). The win
rate compares, prompt by prompt, the policy's response with SFT's response to the same prompt:
1 when the judge scores it higher, 0.5 on a tie, 0 when lower (SFT against itself: 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlhf.judges.bootstrap import JudgeMetrics, win_outcomes
from rlhf.reward.model import CONFIG_FILE


def check_reward_model_dir(path: Path, key: str) -> None:
    """A clear error, naming the params key, when `path` holds no saved reward model."""
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{key}: {path} is not a reward-model directory (no {CONFIG_FILE}); "
                                "give a folder written by the reward stage (RewardModel.save_pretrained)")


def reward_model_metrics(scores: Sequence[float], sft_scores: Sequence[float], n_resamples: int, seed: int
                         ) -> JudgeMetrics:
    """`eval/rm/score` (mean normalised score) and `eval/rm/win_rate` (against SFT's responses)."""
    out = JudgeMetrics(n_resamples, seed)
    out.add("eval/rm/score", list(scores), "no prompt")
    out.add("eval/rm/win_rate", win_outcomes(scores, sft_scores), "no prompt")
    return out
