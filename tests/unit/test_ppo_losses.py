"""Closed-form tests of the PPO losses in rlhf/losses/ppo.py."""

import pytest
import torch

from rlhf.losses.ppo import explained_variance, ppo_policy_loss, ppo_value_loss


def test_policy_loss_ratio_one_is_minus_mean_advantage():
    logp = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    adv = torch.tensor([[1.0, -2.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, m = ppo_policy_loss(logp, logp.detach().clone(), adv, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(1.0 - 2.0) / 2)
    assert m["policy/clipfrac"].item() == 0.0
    assert m["policy/approxkl"].item() == 0.0
    assert m["policy/ratio"].item() == pytest.approx(1.0)
    loss.backward()  # d/dlogp of -A*rho at rho=1 is -A, over 2 tokens
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, 1.0, 0.0]]))


def test_policy_loss_clipping_closed_form():
    old = torch.zeros(1, 4)
    # ratios 1.5, 1.5, 0.5, 0.5 against advantages +1, -1, +1, -1
    logp = torch.log(torch.tensor([[1.5, 1.5, 0.5, 0.5]])).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    loss, m = ppo_policy_loss(logp, old, adv, torch.ones(1, 4), clip_eps=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(1.5, 1.2) = 1.5
    # token 2: max(-0.5, -0.8) = -0.5;            token 3: max(0.5, 0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8) / 4)
    assert m["policy/clipfrac"].item() == pytest.approx(0.5)
    loss.backward()
    # clipped tokens have zero gradient; the others -A * rho / 4
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 1.5 / 4, -0.5 / 4, 0.0]]))


def test_value_loss_closed_form():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0, -1.0]])
    values = torch.tensor([[0.5, 2.0, 0.0]], requires_grad=True)
    loss, m = ppo_value_loss(values, old, returns, torch.ones(1, 3), clip_range=0.2)
    # token 0: V=0.5 clipped to 0.2 -> max(0.25, 0.64) = 0.64
    # token 1: V=2.0 clipped to 0.2 -> max(1.0, 0.64) = 1.0
    # token 2: V=0 inside the range -> 1.0
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.0 + 1.0) / 3)
    assert m["val/clipfrac"].item() == pytest.approx(1 / 3)


def test_losses_accumulate_like_one_batch():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(4, 5, generator=g)
    adv = torch.randn(4, 5, generator=g)
    mask = (torch.arange(5)[None] < torch.tensor([5, 2, 4, 1])[:, None]).float()
    logp_full = (old + 0.3 * torch.randn(4, 5, generator=g)).requires_grad_(True)
    loss, _ = ppo_policy_loss(logp_full, old, adv, mask, 0.2)
    loss.backward()
    logp_micro = logp_full.detach().clone().requires_grad_(True)
    total = mask.sum()
    for rows in (slice(0, 1), slice(1, 4)):  # unequal micro-batches, unequal token counts
        part, _ = ppo_policy_loss(logp_micro[rows], old[rows], adv[rows], mask[rows], 0.2, num_tokens=total)
        part.backward()
    torch.testing.assert_close(logp_micro.grad, logp_full.grad)


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask).item() == pytest.approx(0.0)
