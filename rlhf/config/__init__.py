"""One typed config per stage, each built from the same-named section of `params.yaml`.

`load_config("sft", "params.yaml")` returns an `SFTConfig`; `load_all("params.yaml")` checks every
section (and rejects an unknown top-level section) before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf.config.base import ConfigError, StageConfig, build_config, read_params
from rlhf.config.data import DataConfig
from rlhf.config.dpo import DPOConfig
from rlhf.config.evaluate import EvaluateConfig
from rlhf.config.ppo import PPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.config.tokenizer import TokenizerConfig
from rlhf.config.validate import ValidateConfig

# section name -> its config; with tasks.stages.STAGES (name -> run function) the table of stages
SECTIONS: dict[str, type[StageConfig]] = {
    "data": DataConfig,
    "validate": ValidateConfig,
    "tokenizer": TokenizerConfig,
    "sft": SFTConfig,
    "reward": RewardConfig,
    "ppo": PPOConfig,
    "dpo": DPOConfig,
    "evaluate": EvaluateConfig,
}


def config_class(section: str) -> type[StageConfig]:
    if section not in SECTIONS:
        raise ConfigError(f"unknown stage '{section}'; expected one of {sorted(SECTIONS)}")
    return SECTIONS[section]


def load_config(section: str, params: str | Path = "params.yaml") -> Any:
    data = read_params(params)
    return build_config(config_class(section), section, data.get(section), str(params))


def load_all(params: str | Path = "params.yaml") -> dict[str, Any]:
    data = read_params(params)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{params}: unknown section(s) {unknown}; expected {sorted(SECTIONS)}")
    return {s: build_config(config_class(s), s, data.get(s), str(params)) for s in SECTIONS}


__all__ = ["ConfigError", "StageConfig", "SECTIONS", "config_class", "load_config", "load_all"]
