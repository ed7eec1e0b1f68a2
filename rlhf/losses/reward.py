"""Bradley-Terry reward-model loss, with an optional margin and reward centering."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float = 0.0,
    center_coef: float = 0.0,
    num_pairs: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = (1/N) * sum_i [ -log sigmoid(r_c,i - r_r,i - m_i) + eta * (r_c,i + r_r,i)^2 ]

    - Bradley-Terry negative log-likelihood: Ouyang et al. 2022 (InstructGPT) eq. 1, Stiennon et
      al. 2020 eq. 1; `-log sigmoid` is computed as `softplus(-x)` for stability.
    - margin m (a float or one per pair): Touvron et al. 2023 (Llama 2) eq. 2; m = 0 is plain BT.
    - centering eta = `center_coef`: Eisenstein et al. 2023 ("Helping or herding?", sec. 3) keep
      rewards near zero mean, since BT only identifies rewards up to a constant.

    Shapes: chosen_rewards, rejected_rewards (B,) (rows `.chunk(2)` of a preference batch, see
    docs/architecture.md), margin () or (B,). `num_pairs` = N, the number of pairs in the whole
    optimizer step (rlhf/train/optim.py); None means B.
    Returns the loss and metric means over this batch: "loss/reward", "rewards/accuracies"
    (r_c > r_r), "rewards/margins" (r_c - r_r), "rewards/chosen", "rewards/rejected".
    """
    assert chosen_rewards.shape == rejected_rewards.shape and chosen_rewards.dim() == 1, (
        chosen_rewards.shape, rejected_rewards.shape)
    diff = chosen_rewards.float() - rejected_rewards.float()  # (B,)
    per_pair = F.softplus(-(diff - margin))  # (B,) = -log sigmoid(r_c - r_r - m)
    if center_coef:
        per_pair = per_pair + center_coef * (chosen_rewards.float() + rejected_rewards.float()).pow(2)
    n = len(diff) if num_pairs is None else num_pairs
    loss = per_pair.sum() / n
    metrics = {
        "loss/reward": per_pair.detach().mean(),
        "rewards/accuracies": (diff > 0).float().mean().detach(),
        "rewards/margins": diff.detach().mean(),
        "rewards/chosen": chosen_rewards.detach().float().mean(),
        "rewards/rejected": rejected_rewards.detach().float().mean(),
    }
    return loss, metrics
