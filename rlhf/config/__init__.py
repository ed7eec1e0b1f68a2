"""One typed config per stage, each built from the same-named section of `params.yaml`.

`load_config("sft", "params.yaml")` returns an `SFTConfig`; `load_all("params.yaml")` checks every
section (and rejects an unknown top-level section) before any work starts.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from rlhf.config.base import ConfigError, StageConfig, build_config, read_params

# section name -> "module:Class"; resolved lazily so that loading one section stays cheap.
SECTIONS: dict[str, str] = {
    "data": "rlhf.config.data:DataConfig",
    "validate": "rlhf.config.validate:ValidateConfig",
    "tokenizer": "rlhf.config.tokenizer:TokenizerConfig",
    "sft": "rlhf.config.sft:SFTConfig",
    "reward": "rlhf.config.reward:RewardConfig",
    "ppo": "rlhf.config.ppo:PPOConfig",
    "dpo": "rlhf.config.dpo:DPOConfig",
    "evaluate": "rlhf.config.evaluate:EvaluateConfig",
}


def config_class(section: str) -> type[StageConfig]:
    if section not in SECTIONS:
        raise ConfigError(f"unknown stage '{section}'; expected one of {sorted(SECTIONS)}")
    module, name = SECTIONS[section].split(":")
    return getattr(importlib.import_module(module), name)


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
