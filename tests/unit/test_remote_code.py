"""Code shipped in a model directory runs only when a param (or `rlhf chat --trust-remote-code`)
says so for that model; a model trained from a trusted one records it, so the pipeline's later
stages load it, and a directory the user names cannot trust itself through that record."""

import json
from pathlib import Path

import pytest

from rlhf.config import ConfigError, load_config
from rlhf.errors import UserError
from rlhf.train.models import build_gpt2, load_causal_lm
from rlhf.train.remote_code import TRUST_KEY, needs_code
from tests.worlds import TinyVocab

CONFIGURATION = '''
from transformers import GPT2Config

class ShippedConfig(GPT2Config):
    model_type = "rlhf_shipped_code"
'''
MODELING = '''
from pathlib import Path
from transformers import GPT2LMHeadModel
from .configuration_shipped import ShippedConfig

(Path.cwd() / "shipped-code-ran").touch()  # proof that the shipped module was executed

class ShippedLM(GPT2LMHeadModel):
    config_class = ShippedConfig
'''


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A tiny GPT-2 saved as a model type transformers does not know, with its own modules."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    model_dir = tmp_path / "shipped"
    build_gpt2(TinyVocab(), 1, 2, 16, 32, seed=0).save_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(model_type="rlhf_shipped_code", architectures=["ShippedLM"],
                  auto_map={"AutoConfig": "configuration_shipped.ShippedConfig",
                            "AutoModelForCausalLM": "modeling_shipped.ShippedLM"})
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "configuration_shipped.py").write_text(CONFIGURATION)
    (model_dir / "modeling_shipped.py").write_text(MODELING)
    return model_dir


def ran(tmp_path: Path) -> bool:
    return (tmp_path / "shipped-code-ran").exists()


def test_shipped_code_is_refused_without_the_param_and_never_runs(shipped, tmp_path):
    assert needs_code(shipped)
    for trust in (None, False):
        with pytest.raises(UserError, match="trust_remote_code: true"):
            load_causal_lm(shipped, trust)
    assert not ran(tmp_path)


def test_trusted_code_runs_and_the_trained_model_records_it(shipped, tmp_path):
    model = load_causal_lm(shipped, True)
    assert ran(tmp_path) and type(model).__name__ == "ShippedLM"
    out = tmp_path / "artifacts" / "sft" / "model"
    model.save_pretrained(out)
    assert json.loads((out / "config.json").read_text())[TRUST_KEY] is True
    assert type(load_causal_lm(out)).__name__ == "ShippedLM"  # the pipeline's own output: the record
    with pytest.raises(UserError):
        load_causal_lm(out, False)  # named by the user (rlhf chat without the flag): refused


def test_a_named_directory_cannot_trust_itself(shipped):
    config = json.loads((shipped / "config.json").read_text())
    (shipped / "config.json").write_text(json.dumps({**config, TRUST_KEY: True}))
    with pytest.raises(UserError):
        load_causal_lm(shipped, False)  # sft.trust_remote_code: false wins over the directory's own claim


def test_a_known_model_type_loads_as_before(tmp_path):
    build_gpt2(TinyVocab(), 1, 2, 16, 32, seed=0).save_pretrained(tmp_path / "gpt2")
    assert not needs_code(tmp_path / "gpt2")
    model = load_causal_lm(tmp_path / "gpt2", False)
    assert not hasattr(model.config, TRUST_KEY)


@pytest.mark.parametrize("section", ["sft", "reward"])
def test_the_param_needs_a_named_model(tmp_path, section):
    params = tmp_path / "params.yaml"
    params.write_text(f"{section}:\n  trust_remote_code: true\n")
    with pytest.raises(ConfigError, match="trust_remote_code applies to the model in model_path"):
        load_config(section, params)
    params.write_text(f"{section}:\n  trust_remote_code: true\n  model_path: models/x\n")
    assert load_config(section, params).trust_remote_code is True
