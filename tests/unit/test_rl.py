"""Closed-form tests of the RL helpers in rlhf/rl.py."""

import math

import pytest
import torch

from rlhf.rl import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    kl_estimate,
    kl_shaped_rewards,
    last_token_index,
    penalise_missing_eos,
)


def test_kl_estimators_closed_form():
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    # log r = log(0.25 / 0.5) = -log 2
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 - 1 - math.log(0.5))


def test_k1_and_k3_are_unbiased_in_expectation():
    # E_{y~p}[k(y)] summed exactly over a 3-token vocabulary equals KL(p || q).
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    true_kl = (p * (p / q).log()).sum()
    for kind in ("k1", "k3"):
        per_token = kl_estimate(p.log()[None], q.log()[None], kind)[0]
        assert (p * per_token).sum().item() == pytest.approx(true_kl.item(), rel=1e-6)
    assert bool((kl_estimate(p.log()[None], q.log()[None], "k3") >= 0).all())


def test_kl_estimate_rejects_unknown_kind():
    with pytest.raises(ValueError):
        kl_estimate(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


def test_penalise_missing_eos_closed_form():
    scores = torch.tensor([0.5, -2.0, 3.0, -0.25])
    has_eos = torch.tensor([True, False, False, True])
    out = penalise_missing_eos(scores, has_eos, missing_eos_score=-1.0)
    torch.testing.assert_close(out, torch.tensor([0.5, -1.0, -1.0, -0.25]))  # RM score if EOS, else -1
    assert out.dtype == scores.dtype and scores.tolist() == [0.5, -2.0, 3.0, -0.25]  # input untouched
    # a 0/1 flag works as the bool one; every response with EOS keeps its score
    torch.testing.assert_close(penalise_missing_eos(scores, torch.tensor([1, 0, 0, 1]), -1.0), out)
    torch.testing.assert_close(penalise_missing_eos(scores, torch.ones(4, dtype=torch.bool), -7.0), scores)
    torch.testing.assert_close(penalise_missing_eos(scores, has_eos, None), scores)  # turned off
    with pytest.raises(AssertionError, match="one EOS flag per score"):
        penalise_missing_eos(scores, has_eos[:3], -1.0)


def test_kl_shaped_rewards_closed_form():
    scores = torch.tensor([2.0, -1.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    rewards, non_score = kl_shaped_rewards(scores, kl, mask, beta=0.5)
    expected_non_score = torch.tensor([[-0.05, -0.1, -0.15], [-0.25, 0.0, 0.0]])
    torch.testing.assert_close(non_score, expected_non_score)
    expected = expected_non_score.clone()
    expected[0, 2] += 2.0
    expected[1, 0] += -1.0
    torch.testing.assert_close(rewards, expected)
    assert last_token_index(mask).tolist() == [2, 0]


def _gae_loop(rewards, values, mask, gamma, lam):
    """The textbook recursion, one scalar at a time."""
    B, R = rewards.shape
    adv = [[0.0] * R for _ in range(B)]
    for b in range(B):
        n = int(mask[b].sum())
        last = 0.0
        for t in reversed(range(n)):
            next_v = float(values[b, t + 1]) if t + 1 < n else 0.0
            delta = float(rewards[b, t]) + gamma * next_v - float(values[b, t])
            last = delta + gamma * lam * last
            adv[b][t] = last
    adv = torch.tensor(adv)
    returns = torch.where(mask.bool(), adv + values, torch.zeros_like(adv))
    return adv, returns


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_plain_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(5, 7, generator=g)
    values = torch.randn(5, 7, generator=g)
    lengths = torch.tensor([7, 1, 3, 5, 2])
    mask = (torch.arange(7)[None] < lengths[:, None]).float()
    adv, ret = gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = _gae_loop(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)
    assert bool((adv[mask == 0] == 0).all())


def test_gae_closed_form_monte_carlo_case():
    # gamma = lambda = 1: A_t = (sum of rewards from t on) - V_t, returns = reward-to-go.
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 0.25, 1.0]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), 1.0, 1.0)
    torch.testing.assert_close(ret, torch.tensor([[3.0, 2.0, 2.0]]))
    torch.testing.assert_close(adv, torch.tensor([[2.5, 1.75, 1.0]]))


def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=1000)
    ctl.update(kl=6.0, n_steps=100)
    assert ctl.value == pytest.approx(0.1)
    ctl.update(kl=60.0, n_steps=100)  # error clipped at +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    ctl.update(kl=4.5, n_steps=100)  # error -0.25 clipped at -0.2
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.98)
    other = AdaptiveKLController(0.5, 6.0, 1000)
    other.load_state_dict(ctl.state_dict())
    assert other.value == ctl.value


def test_fixed_kl_controller():
    ctl = FixedKLController(0.05)
    ctl.update(kl=100.0, n_steps=10)
    assert ctl.value == 0.05


def test_only_the_estimators_ppo_accepts_exist():
    with pytest.raises(ValueError, match="expected 'k1' or 'k3'"):
        kl_estimate(torch.zeros(1, 1), torch.zeros(1, 1), "k2")
