"""Pure RL helpers for PPO on language models: KL estimators, the missing-EOS score, KL-shaped
rewards, GAE, the KL controller.

Conventions (all tensors are about the *response* tokens of a batch of `B` sequences, right-padded
to `R` tokens):
  logprobs, ref_logprobs, values, rewards, mask: (B, R)
  mask is 1 on response tokens up to and including the first EOS, 0 on padding after it; it is a
  prefix of ones in every row (the response starts at column 0).
  scores: (B,) one reward-model score per sequence.

Nothing here touches a model; every function is tensor-in, tensor-out and is tested in closed form.
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k3"]


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: KLEstimator = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi.

    With log r = log pi_ref(y_t) - log pi(y_t) (Schulman 2020, "Approximating KL Divergence"):
      k1 = -log r                 unbiased, high variance, can be negative per token
      k3 = (r - 1) - log r        unbiased, low variance, >= 0
    Ziegler et al. (2019) eq. 2 penalise with k1; k3 is the variant used by GRPO-style trainers.
    Shapes: (B, R), (B, R) -> (B, R).
    """
    log_ratio = ref_logprobs - logprobs  # log r, (B, R)
    if kind == "k1":
        return -log_ratio
    if kind == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; expected 'k1' or 'k3'")


def penalise_missing_eos(scores: torch.Tensor, has_eos: torch.Tensor, missing_eos_score: float | None) -> torch.Tensor:
    """The sequence score r(x, y) PPO optimises: the reward model's, unless the response has no EOS.

    r(x, y) = r_RM(x, y)          if y ended with EOS within max_new_tokens
            = missing_eos_score   otherwise
    The "EOS trick" of Huang et al. (2024, "N+ implementation details"): a response cut off by the
    length limit is not scored by the reward model, so the policy cannot gain by rambling on.
    `missing_eos_score=None` turns it off (r = r_RM for every response).
    Evaluation reports its proxy with this same function, so that it is the score PPO optimised.
    Shapes: scores (B,), has_eos (B,) bool (or 0/1) -> (B,), dtype and device of `scores`.
    """
    assert scores.shape == has_eos.shape, f"one EOS flag per score: {tuple(has_eos.shape)} vs {tuple(scores.shape)}"
    if missing_eos_score is None:
        return scores
    has_eos = has_eos.to(device=scores.device, dtype=torch.bool)
    return torch.where(has_eos, scores, torch.full_like(scores, missing_eos_score))


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Column of the last response token of each row. Shape (B, R) -> (B,) long."""
    lengths = mask.long().sum(dim=1)
    assert bool((lengths > 0).all()), "every response needs at least one token"
    return lengths - 1


def kl_shaped_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards of RLHF's KL-regularised objective.

    R(x, y) = r(x, y) - beta * log(pi(y|x) / pi_ref(y|x))    (Ziegler et al. 2019, eq. 2;
    Ouyang et al. 2022, eq. 2), spread over tokens as in Stiennon et al. (2020) and Huang et al.
    (2024, "N+ implementation details"): every response token t receives -beta * kl_t,
    and the last response token also receives the sequence score r(x, y).

    Shapes: scores (B,), kl (B, R), mask (B, R) -> rewards (B, R) (zero on padding), and the
    non-score reward per token (B, R) (the -beta * kl part alone, zero on padding).
    """
    mask = mask.to(kl.dtype)
    non_score = -beta * kl * mask  # (B, R)
    rewards = non_score.clone()
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards, non_score


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16), one episode per row.

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    A_t     = sum_{l>=0} (gamma * lam)^l * delta_{t+l}   computed backwards as
    A_t     = delta_t + gamma * lam * A_{t+1}
    returns_t = A_t + V(s_t)  (the value-function targets, a TD(lambda) return)

    The episode ends after the last response token: V(s_{T}) = 0 and nothing after it counts.
    Shapes: rewards, values, mask (B, R) -> advantages (B, R), returns (B, R), zero on padding.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    length = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
    returns = (advantages + values) * mask
    return advantages, returns


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, beta: float):
        self.value = float(beta)

    def update(self, kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. (2019), section 2.2: a proportional controller that steers the KL to a target.

    e_t      = clip((KL_t - KL_target) / KL_target, -0.2, 0.2)
    beta_t+1 = beta_t * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    `kl` is the mean per-sequence KL of the last batch; `n_steps` the number of episodes in it, so
    that `horizon` is counted in episodes as in the paper (10,000 there).
    """

    def __init__(self, init_beta: float, target: float, horizon: int):
        assert target > 0 and horizon > 0, "target KL and horizon must be positive"
        self.value = float(init_beta)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, kl: float, n_steps: int) -> None:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
