"""DPOConfig: params.yaml loads, cross-field checks name the problem."""

import pytest
import torch
from pydantic import ValidationError

from rlhf.config import load_config
from rlhf.config.dpo import DPOConfig


def test_params_yaml_section_loads():
    cfg = load_config("dpo", "params.yaml")
    assert isinstance(cfg, DPOConfig) and cfg.batch_size % cfg.micro_batch_size == 0


@pytest.mark.parametrize("bad, message", [
    ({"batch_size": 16, "micro_batch_size": 5}, "micro_batch_size must divide"),
    ({"loss_type": "ipo", "label_smoothing": 0.1}, "sigmoid loss only"),
    ({"label_smoothing": 0.5}, "label_smoothing"),
    ({"loss_type": "hinge"}, "loss_type"),
    ({"beta": 0.0}, "beta"),
])
def test_dpo_config_rejects(bad, message):
    with pytest.raises(ValidationError, match=message):
        DPOConfig(**bad)


def _ipo_loss_of(cfg: DPOConfig, per_token_ratio: float, lengths: list[int]) -> float:
    """IPO loss of pairs whose chosen response beats pi_ref by `per_token_ratio` nats per token and
    whose rejected response matches pi_ref exactly, with the given response lengths."""
    from rlhf.stages.dpo import preference_loss, reduce_logps

    n = torch.tensor(lengths + lengths, dtype=torch.float)  # (2B,) [chosen; rejected]
    policy = torch.cat([per_token_ratio * n[: len(lengths)], torch.zeros(len(lengths))])  # summed
    reference = torch.zeros(2 * len(lengths))
    loss, _ = preference_loss(cfg, reduce_logps(cfg, policy, n), reduce_logps(cfg, reference, n), len(lengths))
    return loss.item()


def test_ipo_averages_log_ratios_over_response_tokens_by_default():
    # tau = 0.5: target margin 1 / (2 tau) = 1; a per-token log-ratio of 1 meets it at any length
    cfg = DPOConfig(loss_type="ipo", beta=0.5)
    assert cfg.average_logps
    assert _ipo_loss_of(cfg, 1.0, [3]) == pytest.approx(0.0)
    assert _ipo_loss_of(cfg, 1.0, [40]) == pytest.approx(0.0)
    # summing stays available: the margin is then 3 (length 3) -> (3 - 1)^2 = 4
    summed = DPOConfig(loss_type="ipo", beta=0.5, logp_reduction="sum")
    assert _ipo_loss_of(summed, 1.0, [3]) == pytest.approx(4.0)
    # DPO keeps the summed log-probs of Rafailov et al. eq. 7
    assert not DPOConfig().average_logps
