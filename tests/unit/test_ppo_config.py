"""PPOConfig and EvaluateConfig: params.yaml loads, cross-field checks name the problem."""

import pytest
from pydantic import ValidationError

from rlhf.config import ConfigError, load_config
from rlhf.config.evaluate import EvaluateConfig
from rlhf.config.ppo import PPOConfig


def test_params_yaml_sections_load():
    ppo = load_config("ppo", "params.yaml")
    assert isinstance(ppo, PPOConfig)
    assert ppo.rollout_batch_size % ppo.mini_batch_size == 0
    assert isinstance(load_config("evaluate", "params.yaml"), EvaluateConfig)


@pytest.mark.parametrize("bad, message", [
    ({"rollout_batch_size": 32, "mini_batch_size": 12}, "mini_batch_size must divide"),
    ({"mini_batch_size": 8, "micro_batch_size": 3}, "micro_batch_size must divide"),
    ({"missing_eos_score": 1.0}, "penalty"),
    ({"top_p": 0.9}, "top_p < 1 is not supported"),
    ({"kl_estimator": "k2"}, "kl_estimator"),
    ({"clip_eps": 0.0}, "clip_eps"),
    ({"ppo_epoch": 4}, "ppo_epoch"),
])
def test_ppo_config_rejects(bad, message):
    with pytest.raises(ValidationError, match=message):
        PPOConfig(**bad)


def test_unknown_key_is_named(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("ppo:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="ppo.learning_rat: unknown key"):
        load_config("ppo", params)
