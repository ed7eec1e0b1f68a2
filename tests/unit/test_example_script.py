"""examples/chatbot_rlhf.py: the params it builds from a profile, and the table it prints."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from rlhf.config import load_all
from rlhf.files import write_json, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("chatbot_rlhf", ROOT / "examples" / "chatbot_rlhf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("algorithm", ["ppo", "dpo"])
def test_the_params_swap_in_the_model_and_the_flags(example, algorithm, tmp_path):
    profile = ROOT / "profiles" / "real" / "params.yaml"
    params = example.build_params(profile, tmp_path / "model", algorithm, batch_size=4, ppo_epochs=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))  # as the script writes it
    configs = load_all(tmp_path / "params.yaml")  # still a valid, strict params file
    assert configs["sft"].model_path == str((tmp_path / "model").resolve())
    assert (configs["ppo"].enabled, configs["dpo"].enabled) == (algorithm == "ppo", algorithm == "dpo")
    assert configs["ppo"].ppo_epochs == 3 and configs["ppo"].rollout_batch_size == 4
    assert configs["sft"].batch_size == configs["dpo"].batch_size == 4
    # the profile's relative paths now point into the profile's folder
    assert configs["reward"].model_path == str(ROOT / "profiles" / "real" / "models" / "all-minilm-l6-v2")
    assert configs["data"].files.preference.path == str(ROOT / "profiles" / "real" / "raw" / "hh-rlhf-harmless-base-test.jsonl.gz")


def test_the_report_reads_before_and_after(example, tmp_path):
    write_json(tmp_path / "metrics" / "evaluate.json", {
        "sft": {"eval/rm/win_rate": 0.5, "eval/refusal/advbench": 0.25, "eval/kl_to_ref": 0.0},
        "ppo": {"eval/rm/win_rate": 0.625, "eval/refusal/advbench": 0.5, "eval/kl_to_ref": 1.5}})
    write_json(tmp_path / "metrics" / "reward.json", {"eval/rewards/accuracies": 0.66})
    write_jsonl(tmp_path / "artifacts" / "ppo" / "history.jsonl", [
        {"step": 1, "loss/policy": 0.125, "policy/clipfrac": 0.0}, {"step": 2, "loss/policy": -0.5, "policy/clipfrac": 0.25}])
    text = example.report(tmp_path, "ppo")
    assert "win rate vs SFT" in text and "0.500  ->  0.625" in text
    assert "AdvBench refusal" in text and "0.250  ->  0.500" in text
    assert "reward model preference accuracy (held-out): 0.660" in text
    assert "KL to SFT: 1.500" in text and "PPO policy loss: 0.1250 -> -0.5000" in text
    assert "PPO clip fraction: 0.250" in text
    assert "gold judge" not in text  # no gold figures in these metrics


def test_a_directory_without_a_model_is_refused(example, tmp_path, capsys):
    with pytest.raises(SystemExit):
        example.main(["--model_name", str(tmp_path), "--algorithm", "dpo"])
    assert "not a Hugging Face model directory" in capsys.readouterr().err


def test_the_cli_module_runs_as_the_script_starts_it():
    """The script runs `python -m flows.cli pipeline ...`: the module must act as the `rlhf` command."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "pipeline" in done.stdout and "tracking" in done.stdout
