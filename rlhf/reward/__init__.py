"""The Bradley-Terry reward model (the `reward` stage that trains it is rlhf/stages/reward.py).

`RewardModel` (rlhf/reward/model.py): backbone + scalar head, pooled at the EOS (causal LMs) or at
[CLS] (an encoder with its own tokenizer); `from_pretrained(dir)`, `score(texts)`,
`score_pairs(prompts, responses)`, `compare(text_a, text_b)`. Scoring takes text and encodes it
with the reward model's own tokenizer, whatever the policy's vocabulary.
"""

from rlhf.reward.model import RewardModel

__all__ = ["RewardModel"]
