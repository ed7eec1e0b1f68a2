"""A stage's model directory carries `checksums.json`; the stages that read it verify it, so a
truncated or altered file is one clear error naming the file, never a model loaded from it."""

import json
import os

import pytest

from rlhf.errors import UserError
from rlhf.files import CHECKSUMS, checksum_problem, sha256
from rlhf.reward import RewardModel
from rlhf.train.checkpoint import save_model_dir
from rlhf.train.models import build_gpt2, load_causal_lm
from tests.worlds import TinyVocab


@pytest.fixture
def policy_dir(tmp_path):
    return save_model_dir(tmp_path / "sft" / "model", build_gpt2(TinyVocab(), 1, 2, 16, 32, seed=0),
                          extra_json={"note.json": {"a": 1}})


def test_a_saved_model_lists_every_file_with_its_sha256(policy_dir):
    sums = json.loads((policy_dir / CHECKSUMS).read_text())
    files = sorted(p.name for p in policy_dir.iterdir() if p.name != CHECKSUMS)
    assert sorted(sums) == files and "model.safetensors" in sums and "note.json" in sums
    assert all(sums[name] == sha256(policy_dir / name) for name in files)
    assert checksum_problem(policy_dir) is None
    load_causal_lm(policy_dir)  # intact: loads


def test_a_truncated_weight_file_is_named_not_loaded(policy_dir):
    weights = policy_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"model\.safetensors does not match its checksum .*dvc checkout"):
        load_causal_lm(policy_dir)


def test_a_missing_file_is_named(policy_dir):
    (policy_dir / "config.json").rename(policy_dir.parent / "elsewhere.json")
    assert checksum_problem(policy_dir) == "config.json is missing"


def test_a_reward_model_is_verified_too(tmp_path):
    from tests.chatml import save_tiny_chat_llama

    backbone = save_tiny_chat_llama(tmp_path / "llama")
    rm_dir = save_model_dir(tmp_path / "reward" / "model", RewardModel.from_backbone(backbone, seed=0))
    RewardModel.from_pretrained(rm_dir)
    config = json.loads((rm_dir / "config.json").read_text())
    (rm_dir / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 9}))
    with pytest.raises(UserError, match="config.json does not match its checksum"):
        RewardModel.from_pretrained(rm_dir)


def test_a_folder_written_before_checksums_loads_as_before(policy_dir):
    (policy_dir / CHECKSUMS).unlink()
    assert checksum_problem(policy_dir) is None
    load_causal_lm(policy_dir)


def test_a_folder_checked_once_is_not_hashed_again_until_a_file_changes(policy_dir, monkeypatch):
    import rlhf.files as files

    hashed = []
    real = files.sha256
    monkeypatch.setattr(files, "sha256", lambda path: hashed.append(path.name) or real(path))
    assert checksum_problem(policy_dir) is None
    first = len(hashed)
    assert first == len(json.loads((policy_dir / CHECKSUMS).read_text()))
    assert checksum_problem(policy_dir) is None and len(hashed) == first  # untouched: not read again
    weights = policy_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    before = weights.stat().st_mtime_ns
    weights.write_bytes(bytes(data))
    # a rewrite moves the file's mtime; a test writes faster than the file system's clock ticks
    os.utime(weights, ns=(before + 10**9, before + 10**9))
    assert checksum_problem(policy_dir) == "model.safetensors does not match its checksum (truncated or altered)"
