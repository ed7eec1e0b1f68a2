"""Phase 2 of the pipeline: the Bradley-Terry reward model.

- `RewardModel` (rlhf/reward/model.py): backbone + scalar head, pooled at the EOS (causal LMs)
  or at [CLS] (an encoder with its own tokenizer); `from_pretrained(dir)`, `score(texts)`,
  `score_pairs(prompts, responses)`, `compare(text_a, text_b)`. Scoring takes text and encodes it
  with the reward model's own tokenizer, whatever the policy's vocabulary.
- `run_reward(cfg, paths)` (rlhf/reward/stage.py): the `reward` stage.
"""

from rlhf.reward.model import RewardModel
from rlhf.reward.stage import run_reward

__all__ = ["RewardModel", "run_reward"]
