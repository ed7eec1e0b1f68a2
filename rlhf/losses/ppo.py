"""PPO's clipped policy and value losses, per token, as pure functions.

Shapes: every argument is (B, R) over the response tokens of a micro-batch; `mask` is 1 on response
tokens. `num_tokens` is the number of response tokens in the whole *optimizer step* (all
micro-batches of a gradient-accumulation cycle): the loss is a sum over this micro-batch divided by
it, so that the accumulated gradient equals the one of a single large batch (STYLE rule 8; the
per-micro-batch mean is the bug of TRL issue 2175). Left as None it is this micro-batch's count.
"""

from __future__ import annotations

import torch

from rlhf.ops import masked_mean, masked_sum


def _token_count(mask: torch.Tensor, num_tokens: float | None) -> torch.Tensor | float:
    count = mask.sum() if num_tokens is None else num_tokens
    assert float(count) > 0, "PPO loss over an empty mask"
    return count


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate objective (Schulman et al. 2017, eq. 7), negated to a loss.

    rho_t = exp(log pi_theta(y_t) - log pi_theta_old(y_t))
    L_t   = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps, 1 + eps))
    loss  = sum_t m_t L_t / num_tokens

    `old_logprobs` and `advantages` come frozen from the rollout; only `logprobs` carries gradient.
    Metrics: policy/approxkl = mean 0.5 (log rho)^2 (Schulman 2020, k2),
    policy/clipfrac = share of tokens where the clipped term is the active one, policy/ratio.
    """
    mask = mask.to(logprobs.dtype)
    log_ratio = logprobs - old_logprobs.detach()  # (B, R)
    ratio = torch.exp(log_ratio)
    advantages = advantages.detach()
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)  # (B, R)
    loss = masked_sum(per_token, mask) / _token_count(mask, num_tokens)
    with torch.no_grad():
        metrics = {
            "policy/approxkl": masked_mean(0.5 * log_ratio.pow(2), mask),
            "policy/clipfrac": masked_mean((clipped > unclipped).to(mask.dtype), mask),
            "policy/ratio": masked_mean(ratio, mask),
        }
    return loss, metrics


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (OpenAI baselines `ppo2`; kept in Huang et al. 2024).

    V_clip = V_old + clip(V - V_old, -eps_v, eps_v)
    L_t    = 0.5 * max((V_t - G_t)^2, (V_clip_t - G_t)^2)
    loss   = sum_t m_t L_t / num_tokens

    `old_values` and the GAE returns `G` come frozen from the rollout; only `values` carries gradient.
    Metrics: val/clipfrac = share of tokens where the clipped error is the larger one.
    """
    mask = mask.to(values.dtype)
    old_values, returns = old_values.detach(), returns.detach()
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_err = (values - returns).pow(2)
    clipped_err = (clipped_values - returns).pow(2)
    per_token = 0.5 * torch.maximum(unclipped_err, clipped_err)  # (B, R)
    loss = masked_sum(per_token, mask) / _token_count(mask, num_tokens)
    with torch.no_grad():
        metrics = {"val/clipfrac": masked_mean((clipped_err > unclipped_err).to(mask.dtype), mask)}
    return loss, metrics


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[G - V] / Var[G] over the masked tokens: 1 is a perfect critic, <= 0 a useless one."""
    mask = mask.to(values.dtype)
    var_returns = masked_mean((returns - masked_mean(returns, mask)).pow(2), mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)).pow(2), mask)
    return 1.0 - var_residual / var_returns.clamp_min(1e-8)
