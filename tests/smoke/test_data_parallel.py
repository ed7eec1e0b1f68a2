"""SFT, reward, DPO and PPO in 2 data-parallel CPU processes (gloo), started as `RLHF_NUM_PROCESSES=2`
starts them (`tasks.launch`), match the one-process run: the same loss curve and held-out metrics
within float tolerance, the curve reaching the launching process's listener as it is logged (each
global batch is sharded, gradients averaged, and the reported metrics reduced over both processes;
PPO samples each prompt from its own random stream and whitens over the gathered batch)."""

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from rlhf.config import load_config
from rlhf.errors import UserError
from rlhf.paths import Paths
from rlhf.stage import listening
from rlhf.train import load_causal_lm
from tasks.launch import run_in_processes
from tasks.stages import STAGES
from tests.worlds import rl_world

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

PARAMS = {
    "sft": dict(n_layer=1, n_head=2, n_embd=32, n_positions=64, max_seq_len=64, batch_size=8, micro_batch_size=2,
                max_steps=5, warmup_steps=1, learning_rate=3e-3, log_every=1, checkpoint_every=5, sample_count=0,
                eval_examples=8, packing=False),
    "reward": dict(max_steps=4, warmup_steps=1, batch_size=8, micro_batch_size=2, log_every=1, checkpoint_every=4,
                   max_seq_len=64, norm_examples=8),
    "dpo": dict(max_steps=3, batch_size=8, micro_batch_size=2, warmup_steps=1, max_seq_len=64, eval_batch_size=8,
                checkpoint_every=3, log_every=1),
    "ppo": dict(max_steps=3, rollout_batch_size=8, mini_batch_size=4, micro_batch_size=1, ppo_epochs=2,
                max_new_tokens=8, learning_rate=3e-3, checkpoint_every=3, log_every=1, mixed_precision="no",
                missing_eos_score=None),  # the reward model scores every (unfinished) response
}
LOSS = {"sft": "loss/sft", "reward": "loss/reward", "dpo": "loss/dpo"}
# PPO's rollout statistics (over the gathered batch) and its update's (reduced over the processes)
PPO_CURVE = ("objective/kl", "objective/scores", "objective/entropy", "objective/rlhf_reward", "val/explained_variance",
             "policy/response_length", "loss/policy", "loss/value", "policy/ratio", "policy/clipfrac",
             "grad_norm/policy", "grad_norm/value")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp-world")
    rl_world(root)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return root


@pytest.mark.parametrize("stage", ["sft", "reward", "dpo"])
def test_two_processes_match_one(world, tmp_path, stage):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        shutil.copytree(world, root)
    single = STAGES[stage].run(load_config(stage, one / "params.yaml"), Paths(one))
    live: list[dict] = []
    with listening(live.append):  # the task's live MLflow run listens like this
        double = run_in_processes(stage, str(two / "params.yaml"), str(two), 2)
    assert live == double.history  # process 0's rows, handed on while the processes trained
    assert [r["step"] for r in double.history] == [r["step"] for r in single.history]
    for a, b in zip(single.history, double.history):
        assert b[LOSS[stage]] == pytest.approx(a[LOSS[stage]], rel=1e-5, abs=1e-6), (stage, a["step"])
        assert b["train/grad_norm"] == pytest.approx(a["train/grad_norm"], rel=1e-4, abs=1e-6), (stage, a["step"])
    held_out = [k for k in single.metrics if k.startswith("eval/")]
    assert held_out, single.metrics
    for key in held_out:
        assert double.metrics[key] == pytest.approx(single.metrics[key], rel=1e-5, abs=1e-6), (stage, key)
    assert (two / "artifacts" / stage / "model" / "config.json").is_file()



# Imported by every Python process that has its folder on PYTHONPATH: records which process ran
# `FirstMinibatch.run`, once per PPO iteration, in the file that FIRST_MINIBATCH_LOG names.
RECORD_FIRST_MINIBATCH = """
import os
import rlhf.stages.ppo_update as update
real = update.FirstMinibatch.run
def run(self, batch):
    with open(os.environ["FIRST_MINIBATCH_LOG"], "a") as log:
        log.write(f"{self.accelerator.process_index}\\n")
    return real(self, batch)
update.FirstMinibatch.run = run
"""


@pytest.mark.parametrize("micro", [1, 2])
def test_ppo_in_two_processes_matches_one(world, tmp_path, micro, monkeypatch):
    """micro 1: every process accumulates micro-batches; micro 2: a process's share of a minibatch
    of 4 is one micro-batch in 2 processes, whose first minibatch's forward then gives log pi_old
    (`FirstMinibatch`: each process runs its share, the shares are gathered), while the one process
    runs the plain evaluation pass."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(RECORD_FIRST_MINIBATCH)
    log = tmp_path / "first.log"
    paths = [str(tmp_path / "hook"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("FIRST_MINIBATCH_LOG", str(log))
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        shutil.copytree(world, root)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["ppo"]["micro_batch_size"] = micro
        (root / "params.yaml").write_text(yaml.safe_dump(params))
    single = STAGES["ppo"].run(load_config("ppo", one / "params.yaml"), Paths(one))
    live: list[dict] = []
    with listening(live.append):
        double = run_in_processes("ppo", str(two / "params.yaml"), str(two), 2)
    assert live == double.history
    assert [r["step"] for r in double.history] == [r["step"] for r in single.history] == [1, 2, 3]
    for a, b in zip(single.history, double.history):
        for key in PPO_CURVE:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert single.history[-1]["objective/kl"] != 0.0  # the policy moved: the match is not of two idle runs
    for row in single.history + double.history:  # pi_old came from the policy being trained
        assert row["policy/first_ratio"] == pytest.approx(1.0, abs=1e-5)
    # each of the 2 processes ran its share of the first minibatch at each of the 3 iterations
    ran = sorted(log.read_text().split()) if log.exists() else []
    assert ran == (["0"] * 3 + ["1"] * 3 if micro == 2 else []), ran
    for key in ("objective/kl", "objective/scores", "objective/beta"):
        assert double.metrics[key] == pytest.approx(single.metrics[key], rel=1e-4, abs=1e-6), key
    weights = [load_causal_lm(root / "artifacts" / "ppo" / "model").state_dict() for root in (one, two)]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert len({r["objective/scores"] for r in single.history}) == 3  # scores that vary, not one constant


def test_a_batch_the_processes_cannot_share_is_refused_naming_the_keys(world, tmp_path):
    """SFT's batch of 4 in micro-batches of 4 cannot be split over 2 processes: the stage stops
    before training with the keys and a fix, not an assertion traceback."""
    root = tmp_path / "root"
    shutil.copytree(world, root)
    (root / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "sft": {**PARAMS["sft"], "batch_size": 4,
                                                                          "micro_batch_size": 4}}))
    model = root / "artifacts" / "sft" / "model" / "model.safetensors"  # the world's SFT model
    before = model.read_bytes()
    with pytest.raises(UserError, match=r"sft.batch_size=4 cannot be shared by 2 processes in micro-batches of "
                                        r"sft.micro_batch_size=4 .*set sft.micro_batch_size to a divisor of 2"):
        run_in_processes("sft", str(root / "params.yaml"), str(root), 2)
    assert model.read_bytes() == before  # nothing trained, nothing written
