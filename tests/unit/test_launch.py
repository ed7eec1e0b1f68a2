"""RLHF_NUM_PROCESSES: how many data-parallel processes a stage asks for; bad values are named."""

import pytest
import yaml

from rlhf.errors import UserError
from tasks.launch import num_processes


@pytest.mark.parametrize("value, expected", [(None, 1), ("", 1), ("1", 1), ("4", 4)])
def test_the_number_of_processes(monkeypatch, value, expected):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    if value is None:
        monkeypatch.delenv("RLHF_NUM_PROCESSES", raising=False)
    else:
        monkeypatch.setenv("RLHF_NUM_PROCESSES", value)
    assert num_processes() == expected


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_number_is_named(monkeypatch, value):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("RLHF_NUM_PROCESSES", value)
    with pytest.raises(UserError, match="RLHF_NUM_PROCESSES"):
        num_processes()


def test_a_launched_process_never_launches_again(monkeypatch):
    monkeypatch.setenv("RLHF_NUM_PROCESSES", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert num_processes() == 1


def test_the_shipped_ddp_config_is_one_accelerate_reads():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).resolve().parents[2] / "configs/accelerate/ddp.yaml"
    config = load_config_from_file(str(path))
    assert config.distributed_type == "MULTI_GPU" and config.num_machines == 1
    assert yaml.safe_load(path.read_text())["mixed_precision"] == "no"
