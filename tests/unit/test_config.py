import pytest

from rlhf.config import ConfigError, load_all, load_config


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_unknown_key_is_named(tmp_path):
    p = write(tmp_path, "tokenizer:\n  vocab_size: 1000\n  vocab_sise: 3\n")
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_sise: unknown key"):
        load_config("tokenizer", p)


def test_wrong_type_is_named(tmp_path):
    p = write(tmp_path, "tokenizer:\n  vocab_size: lots\n")
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size: .*integer"):
        load_config("tokenizer", p)


def test_out_of_range_is_named(tmp_path):
    p = write(tmp_path, "tokenizer:\n  vocab_size: 10\n")
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size: .*greater than or equal to 300"):
        load_config("tokenizer", p)


def test_unknown_section_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown section"):
        load_all(write(tmp_path, "tokenizr: {}\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config("tokenizer", tmp_path / "nope.yaml")


def test_shipped_params_are_valid():
    from pathlib import Path

    configs = load_all(Path(__file__).resolve().parents[2] / "params.yaml")
    assert configs["tokenizer"].vocab_size >= 300


def test_the_real_profiles_params_are_valid():
    from pathlib import Path

    configs = load_all(Path(__file__).resolve().parents[2] / "profiles" / "real" / "params.yaml")
    assert configs["data"].source == "files" and configs["sft"].lora_r > 0
    assert configs["reward"].model_path == "models/all-minilm-l6-v2"


def test_python_defaults_are_the_shipped_params():
    """params.yaml is where a value is set: every field of every stage config appears there, and the
    Python default (used by tests and by a params file that leaves a key out) is that same value."""
    from pathlib import Path

    from rlhf.config import SECTIONS, config_class
    from rlhf.config.base import read_params

    params = read_params(Path(__file__).resolve().parents[2] / "params.yaml")
    problems = []
    for section in SECTIONS:
        cls, shipped = config_class(section), params.get(section) or {}
        default = cls()
        for key in cls.model_fields:
            if key not in shipped:
                problems.append(f"{section}.{key}: not in params.yaml")
            elif getattr(default, key) != cls.model_validate(shipped).__getattribute__(key):
                problems.append(f"{section}.{key}: default {getattr(default, key)!r} != params.yaml {shipped[key]!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("text, key", [
    ("sft:\n  packing: \"yes\"\n", r"sft\.packing: .*boolean"),
    ("sft:\n  max_steps: \"1600\"\n", r"sft\.max_steps: .*integer"),
    ("sft:\n  max_steps: 1600.0\n", r"sft\.max_steps: .*integer"),
    ("dpo:\n  learning_rate: \"1e-4\"\n", r"dpo\.learning_rate: .*number"),
    ("sft:\n  packing: yes\n", r"sft\.packing: .*boolean"),  # YAML 1.2 (DVC's): `yes` is text
    ("ppo:\n  adaptive_kl: 1\n", r"ppo\.adaptive_kl: .*boolean"),
])
def test_values_of_the_wrong_type_are_not_coerced(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key):
        load_config(text.split(":")[0], write(tmp_path, text))


def test_params_read_as_dvc_writes_them(tmp_path):
    """`dvc exp run -S` rewrites params.yaml in YAML 1.2: an unquoted `no` is the text "no" and
    `1e-4` a number, for the stages as for DVC."""
    cfg = load_config("ppo", write(tmp_path, "ppo:\n  mixed_precision: no\n  learning_rate: 1e-4\n"))
    assert cfg.mixed_precision == "no" and cfg.learning_rate == 1e-4
