"""DPOConfig: params.yaml loads, cross-field checks name the problem."""

import pytest
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
