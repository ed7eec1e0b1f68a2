"""Trained models are logged to MLflow under the names the stages give them, registered, and load
back for inference: policies through the standard transformers flavour, the reward model as a
pyfunc logged as code; no pickle is stored or read."""

import ast
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from rlhf.reward import RewardModel
from rlhf.stage import StageOutput
from rlhf.train.models import build_gpt2, load_tokenizer
from rlhf.train.toy import make_toy_world
from tasks.models import log_model_dir
from tasks.tracking import use_experiment

ROOT = Path(__file__).resolve().parents[2]
TRAINERS = {"sft": "rlhf/stages/sft.py", "reward": "rlhf/stages/reward.py", "ppo": "rlhf/stages/ppo.py", "dpo": "rlhf/stages/dpo.py"}
SFT, REWARD = StageOutput.registered_name("sft"), StageOutput.registered_name("reward")


def models_keys(path: Path) -> list[ast.expr]:
    """The key expressions of every `models={...}` given to StageOutput in a file."""
    keys = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "StageOutput":
            for kw in node.keywords:
                if kw.arg == "models":
                    assert isinstance(kw.value, ast.Dict), ast.unparse(kw.value)
                    keys += kw.value.keys
    return keys


@pytest.mark.parametrize("stage", sorted(TRAINERS))
def test_each_trainer_registers_its_model_as_rlhf_stage(stage):
    assert StageOutput.registered_name(stage) == f"rlhf-{stage}"
    keys = models_keys(ROOT / TRAINERS[stage])
    assert [ast.unparse(k) for k in keys] == [f"StageOutput.registered_name('{stage}')"]


def test_policy_and_reward_model_round_trip(tmp_path, mlflow_sqlite):
    paths = make_toy_world(tmp_path / "world", n_sft=16, n_pref=16)
    tok = load_tokenizer(paths.tokenizer)
    policy_dir = tmp_path / "policy"
    build_gpt2(tok, n_layer=1, n_head=2, n_embd=16, n_positions=64, seed=0).save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)
    rm = RewardModel.from_backbone(policy_dir, tokenizer=tok, seed=0)
    rm_dir = tmp_path / "rm"
    rm.save_pretrained(rm_dir)

    use_experiment(tmp_path)  # as the stages do: artifacts under <root>/.state, never ./mlruns
    with mlflow.start_run():
        log_model_dir(policy_dir, SFT)
        log_model_dir(rm_dir, REWARD)

    pipe = mlflow.transformers.load_model(f"models:/{SFT}/1")
    out = pipe(["How do I water a fern?", "Explain tides."], max_new_tokens=8, do_sample=False)
    assert len(out) == 2 and all(isinstance(o[0]["generated_text"], str) for o in out)
    assert pipe.model.config.n_embd == 16  # the trained model itself

    reward = mlflow.pyfunc.load_model(f"models:/{REWARD}/1")
    frame = pd.DataFrame({"prompt": ["How do I water a fern?"] * 2, "response": ["Water it weekly.", "No."]})
    scores = reward.predict(frame)
    expected = RewardModel.from_pretrained(rm_dir).score_pairs(list(frame["prompt"]), list(frame["response"]))
    assert list(scores) == expected
    artifacts = tmp_path / ".state" / "mlartifacts"
    assert any(artifacts.rglob("MLmodel")), "model artifacts outside the state folder"
    assert not [p for p in artifacts.rglob("*") if p.suffix in (".pkl", ".pickle")], "a pickle was logged"
