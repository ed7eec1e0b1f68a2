import math

import pytest
import torch

from rlhf.losses.reward import bradley_terry_loss


def _nls(x: float) -> float:  # -log sigmoid(x)
    return math.log1p(math.exp(-x))


def test_bradley_terry_closed_form():
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    loss, m = bradley_terry_loss(chosen, rejected)
    expected = (_nls(1.0) + _nls(0.0) + _nls(-2.0)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["rewards/accuracies"].item() == pytest.approx(1 / 3)  # a tie is not a win
    assert m["rewards/margins"].item() == pytest.approx((1.0 + 0.0 - 2.0) / 3)
    assert m["rewards/chosen"].item() == pytest.approx(1 / 3)
    assert m["rewards/rejected"].item() == pytest.approx(2 / 3)


def test_margin_shifts_the_difference():
    chosen, rejected = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.0])
    loss, _ = bradley_terry_loss(chosen, rejected, margin=0.5)
    assert loss.item() == pytest.approx((_nls(0.5) + _nls(-1.0)) / 2, rel=1e-6)
    per_pair, _ = bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.0, 0.0]))
    assert per_pair.item() == pytest.approx((_nls(0.0) + _nls(-0.5)) / 2, rel=1e-6)


def test_centering_adds_squared_sum():
    chosen, rejected = torch.tensor([2.0, -1.0]), torch.tensor([1.0, -2.0])
    loss, m = bradley_terry_loss(chosen, rejected, center_coef=0.01)
    bt = _nls(1.0)
    assert loss.item() == pytest.approx(bt + 0.01 * (9.0 + 9.0) / 2, rel=1e-6)
    assert m["loss/reward"].item() == pytest.approx(loss.item(), rel=1e-6)


def test_num_pairs_normalises_over_the_optimizer_step():
    chosen, rejected = torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.4])
    mean, _ = bradley_terry_loss(chosen, rejected)
    share, _ = bradley_terry_loss(chosen, rejected, num_pairs=8)
    assert share.item() == pytest.approx(mean.item() * 2 / 8, rel=1e-6)


def test_gradient_is_sigmoid_of_negative_difference():
    chosen = torch.tensor([0.7], requires_grad=True)
    rejected = torch.tensor([0.2], requires_grad=True)
    loss, _ = bradley_terry_loss(chosen, rejected)
    loss.backward()
    # d/dr_c [-log sigmoid(r_c - r_r)] = -sigmoid(r_r - r_c)
    assert chosen.grad.item() == pytest.approx(-1 / (1 + math.exp(0.5)), rel=1e-6)
    assert rejected.grad.item() == pytest.approx(1 / (1 + math.exp(0.5)), rel=1e-6)
