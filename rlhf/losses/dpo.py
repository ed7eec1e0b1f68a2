"""Direct preference losses (DPO, conservative DPO, IPO) as pure functions of sequence log-probs.

Every argument is a (B,) tensor over the `B` pairs of a micro-batch: the SUM over response tokens
(prompt excluded) of log pi(y_t | x, y_<t), for the chosen (w) and rejected (l) responses under
the policy and the frozen reference; or its MEAN over those tokens, which is the convention of the
IPO paper and the project's default for IPO (`dpo.logp_reduction`, applied by `rlhf/stages/dpo.py`). With the project's preference batch convention the four come
from two forward passes over `2B` rows split with `.chunk(2)`:
    policy_chosen, policy_rejected = policy_seq_logps.chunk(2)   # rows [c0..c_{B-1}, r0..r_{B-1}]

`num_pairs` is the number of pairs in the whole optimizer step (all micro-batches), so that summed
micro-batch losses equal the large-batch mean (STYLE rule 8); None means this micro-batch's count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _implicit_reward_metrics(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> dict[str, torch.Tensor]:
    """DPO's implicit rewards r_hat(x, y) = beta * log(pi(y|x) / pi_ref(y|x)) (Rafailov et al. eq. 5)."""
    with torch.no_grad():
        chosen = beta * (policy_chosen - ref_chosen)
        rejected = beta * (policy_rejected - ref_rejected)
        return {
            "rewards/chosen": chosen.mean(),
            "rewards/rejected": rejected.mean(),
            "rewards/accuracies": (chosen > rejected).float().mean(),
            "rewards/margins": (chosen - rejected).mean(),
            "logps/chosen": policy_chosen.mean(),
            "logps/rejected": policy_rejected.mean(),
        }


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
    num_pairs: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al. 2023, eq. 7), and conservative DPO when label_smoothing > 0.

    h    = log pi(y_w|x) - log pi_ref(y_w|x) - log pi(y_l|x) + log pi_ref(y_l|x)
    DPO:  L = -log sigma(beta * h)
    cDPO: L = -(1 - eps) log sigma(beta * h) - eps log sigma(-beta * h)
          (Mitchell 2023, "A note on DPO with noisy preferences": the labels are flipped with
          probability eps, the expected loss under that noise.)
    loss = sum over pairs of L / num_pairs.  Shapes: four (B,) tensors -> scalar.
    """
    assert 0.0 <= label_smoothing < 0.5, "label_smoothing is a flip probability in [0, 0.5)"
    ref_chosen, ref_rejected = ref_chosen.detach(), ref_rejected.detach()
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)  # (B,)
    per_pair = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    count = per_pair.numel() if num_pairs is None else num_pairs
    loss = per_pair.sum() / count
    metrics = _implicit_reward_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    metrics["loss/dpo"] = per_pair.detach().mean()  # mean over this micro-batch's pairs
    return loss, metrics


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    num_pairs: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm...", eq. 17), with tau = beta.

    h = log pi(y_w|x) - log pi_ref(y_w|x) - log pi(y_l|x) + log pi_ref(y_l|x)
    L = (h - 1 / (2 tau))^2
    It regresses the log-ratio margin to a finite target instead of pushing it to infinity, which
    keeps the policy near the reference when preferences are (near) deterministic.
    loss = sum over pairs of L / num_pairs.  Shapes: four (B,) tensors -> scalar.
    """
    ref_chosen, ref_rejected = ref_chosen.detach(), ref_rejected.detach()
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)  # (B,)
    per_pair = (h - 1.0 / (2.0 * beta)).pow(2)
    count = per_pair.numel() if num_pairs is None else num_pairs
    loss = per_pair.sum() / count
    metrics = _implicit_reward_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    metrics["loss/dpo"] = per_pair.detach().mean()  # mean over this micro-batch's pairs
    return loss, metrics
