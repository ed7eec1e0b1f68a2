"""RLHF_DEVICE: a GPU worker sets `cuda`, and a machine without a usable GPU stops the stage at once
with a clear message instead of training on its CPU."""

import pytest
import torch

from rlhf.errors import UserError
from rlhf.train.runtime import make_accelerator


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_stops_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("RLHF_DEVICE", "cuda")
    with pytest.raises(UserError, match="RLHF_DEVICE=cuda asks for a GPU, and this machine has no usable CUDA device"):
        make_accelerator("no")


def test_a_wrong_value_is_named(monkeypatch):
    monkeypatch.setenv("RLHF_DEVICE", "tpu")
    with pytest.raises(UserError, match="RLHF_DEVICE='tpu': expected cuda, cpu or auto"):
        make_accelerator("no")


@pytest.mark.parametrize("value", ["cpu", "auto", ""])
def test_cpu_and_auto_run_here(monkeypatch, value):
    monkeypatch.setenv("RLHF_DEVICE", value)
    accelerator = make_accelerator("no")
    assert accelerator.device.type == ("cpu" if value == "cpu" or not torch.cuda.is_available() else "cuda")


@pytest.mark.parametrize("var", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_an_accelerate_config_asking_for_its_own_sharding_is_refused(monkeypatch, var):
    monkeypatch.setenv(var, "true")  # what `accelerate launch` sets for such a config
    with pytest.raises(UserError, match=f"{var}=true.*set `fsdp: true` in the stage's params"):
        make_accelerator("no")
