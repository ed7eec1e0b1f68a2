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
