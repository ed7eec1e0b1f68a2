"""Every training stage takes its optimiser, schedule and precision from its TrainConfig: the
stages are found from the config table, so a new trainer is checked too."""

import ast
import importlib
import inspect

import pytest

from rlhf.config import SECTIONS, config_class
from rlhf.config.base import TrainConfig
from tasks.stages import library_function

TRAINING = [s for s in SECTIONS if issubclass(config_class(s), TrainConfig)]


def test_the_training_stages_are_the_four_trainers():
    assert sorted(TRAINING) == ["dpo", "ppo", "reward", "sft"]


def _calls(stage: str) -> list[str]:
    source = inspect.getsource(importlib.import_module(library_function(stage).__module__))
    return [ast.unparse(node) for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]


@pytest.mark.parametrize("stage", TRAINING)
def test_trainer_builds_from_its_config(stage):
    calls = _calls(stage)
    assert any(c.startswith("optimizer_from(") for c in calls), f"{stage}: no optimizer_from"
    assert any(c.startswith("scheduler_from(") for c in calls), f"{stage}: no scheduler_from"
    assert "make_accelerator(cfg.mixed_precision)" in calls, f"{stage}: precision not from cfg.mixed_precision"
    direct = [c for c in calls if c.startswith(("build_optimizer(", "build_scheduler(", "torch.optim."))]
    assert not direct, f"{stage}: builds its optimizer or schedule by hand: {direct}"
