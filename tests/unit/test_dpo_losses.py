"""Closed-form tests of the DPO, cDPO and IPO losses in rlhf/losses/dpo.py."""

import math

import pytest
import torch

from rlhf.losses.dpo import dpo_loss, ipo_loss


def _pairs():
    # h = (pc - rc) - (pr - rr) = (-1 + 2) - (-3 + 2) = 2
    pc = torch.tensor([-1.0], requires_grad=True)
    pr = torch.tensor([-3.0], requires_grad=True)
    rc = torch.tensor([-2.0], requires_grad=True)
    rr = torch.tensor([-2.0], requires_grad=True)
    return pc, pr, rc, rr


def test_dpo_loss_closed_form():
    pc, pr, rc, rr = _pairs()
    loss, m = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))  # -log sigma(0.5 * 2)
    assert m["rewards/chosen"].item() == pytest.approx(0.5)
    assert m["rewards/rejected"].item() == pytest.approx(-0.5)
    assert m["rewards/margins"].item() == pytest.approx(1.0)
    assert m["rewards/accuracies"].item() == 1.0
    assert m["logps/chosen"].item() == -1.0 and m["logps/rejected"].item() == -3.0
    loss.backward()
    sig = 1 / (1 + math.exp(1.0))  # sigma(-beta h)
    assert pc.grad.item() == pytest.approx(-0.5 * sig)
    assert pr.grad.item() == pytest.approx(0.5 * sig)
    assert rc.grad is None and rr.grad is None  # the reference is frozen


def test_dpo_at_reference_is_log2():
    x = torch.tensor([-4.0, -7.0])
    loss, m = dpo_loss(x, x, x, x, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    assert m["rewards/accuracies"].item() == 0.0  # ties do not count as correct


def test_conservative_dpo_closed_form():
    pc, pr, rc, rr = _pairs()
    loss, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1)
    expected = 0.9 * math.log1p(math.exp(-1.0)) + 0.1 * math.log1p(math.exp(1.0))
    assert loss.item() == pytest.approx(expected)


def test_ipo_loss_closed_form():
    pc, pr, rc, rr = _pairs()
    loss, m = ipo_loss(pc, pr, rc, rr, beta=0.25)  # (2 - 1/(2*0.25))^2 = 0
    assert loss.item() == pytest.approx(0.0)
    loss, _ = ipo_loss(pc, pr, rc, rr, beta=0.5)  # (2 - 1)^2 = 1
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert pc.grad.item() == pytest.approx(2.0)  # d/dh (h - 1)^2 = 2(h - 1) = 2


def test_dpo_accumulates_like_one_batch():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, generator=g) for _ in range(4))
    full = pc.clone().requires_grad_(True)
    dpo_loss(full, pr, rc, rr, beta=0.1)[0].backward()
    micro = pc.clone().requires_grad_(True)
    for rows in (slice(0, 2), slice(2, 5)):
        dpo_loss(micro[rows], pr[rows], rc[rows], rr[rows], beta=0.1, num_pairs=5)[0].backward()
    torch.testing.assert_close(micro.grad, full.grad)
