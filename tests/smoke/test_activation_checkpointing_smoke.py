"""`activation_checkpointing: true` in every trainer, on tiny models in a toy world: the trained
models (PPO: policy and critic) recompute their blocks, and the run is the plain run: the same
per-step history and the same saved weights, up to float noise."""

from __future__ import annotations

import shutil

import pytest

import rlhf.stages.dpo
import rlhf.stages.ppo
import rlhf.stages.reward
import rlhf.stages.sft
from rlhf.config.dpo import DPOConfig
from rlhf.config.ppo import PPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.reward import RewardModel
from rlhf.train import load_causal_lm
from tests.smoke.test_lora_smoke import assert_same_weights
from tests.unit.test_activation_checkpointing import blocks_of
from tests.worlds import rl_world

SFT = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, max_seq_len=64, batch_size=8, micro_batch_size=4,
           max_steps=4, warmup_steps=1, learning_rate=1e-2, checkpoint_every=4, sample_count=0, eval_examples=8)
RM = dict(max_steps=4, batch_size=8, micro_batch_size=4, warmup_steps=1, learning_rate=1e-2, checkpoint_every=4,
          max_seq_len=64, norm_examples=8)
DPO = dict(epochs=1, max_steps=None, batch_size=8, micro_batch_size=4, learning_rate=1e-2, warmup_steps=0,
           eval_batch_size=8, checkpoint_every=4)
PPO = dict(max_steps=2, rollout_batch_size=8, mini_batch_size=4, micro_batch_size=2, ppo_epochs=2,
           max_new_tokens=8, checkpoint_every=2, learning_rate=1e-2, value_learning_rate=1e-2, temperature=1.0)


def record_checkpointed(monkeypatch, module) -> list:
    """Every model `module` passes to `with_activation_checkpointing` with `enabled` true."""
    real, made = module.with_activation_checkpointing, []

    def spy(model, enabled):
        if enabled:
            made.append(model)
        return real(model, enabled)

    monkeypatch.setattr(module, "with_activation_checkpointing", spy)
    return made


def assert_recomputes(models: list, count: int) -> None:
    assert len(models) == count
    for model in models:
        assert all(b.gradient_checkpointing for b in blocks_of(model)), type(model).__name__


def assert_same_history(got: list[dict], want: list[dict], keys: tuple[str, ...]) -> None:
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        for key in keys:
            assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-6), (g["step"], key)


def twice(run, cfg_plain, cfg_ckpt, paths, out_dir, load):
    """Run the stage plain, keep what it wrote, run it checkpointed (fresh checkpoints folder)."""
    plain = run(cfg_plain, paths)
    plain_weights = load(out_dir).state_dict()
    shutil.rmtree(paths.root / ".state", ignore_errors=True)
    shutil.rmtree(out_dir)
    ckpt = run(cfg_ckpt, paths)
    return plain, plain_weights, ckpt, load(out_dir).state_dict()


@pytest.fixture()
def world(tmp_path):
    return rl_world(tmp_path)


# stage: (its module, its config class, the config, the directory of its output, how that loads, its loss)
TRAINERS = {
    "sft": (rlhf.stages.sft, SFTConfig, SFT, "sft", load_causal_lm, "loss/sft"),
    "reward": (rlhf.stages.reward, RewardConfig, RM, "reward", RewardModel.from_pretrained, "loss/reward"),
    "dpo": (rlhf.stages.dpo, DPOConfig, DPO, "dpo", load_causal_lm, "loss/dpo"),
}


@pytest.mark.parametrize("stage", list(TRAINERS))
def test_a_checkpointed_trainer_is_the_plain_run(world, monkeypatch, stage):
    module, config, params, out, load, loss = TRAINERS[stage]
    made = record_checkpointed(monkeypatch, module)
    run = getattr(module, f"run_{stage}")
    plain, pw, ckpt, cw = twice(run, config(**params), config(**params, activation_checkpointing=True), world,
                                getattr(world, out) / "model", load)
    assert_recomputes(made, 1)
    assert_same_history(ckpt.history, plain.history, (loss, "train/grad_norm"))
    assert_same_weights(cw, pw)


def test_ppo_checkpointed_policy_and_critic_are_the_plain_run(world, monkeypatch):
    made = record_checkpointed(monkeypatch, rlhf.stages.ppo)
    plain, pw, ckpt, cw = twice(rlhf.stages.ppo.run_ppo, PPOConfig(**PPO), PPOConfig(**PPO, activation_checkpointing=True),
                                world, world.ppo / "model", load_causal_lm)
    assert_recomputes(made, 2)  # the policy and the critic
    assert_same_history(ckpt.history, plain.history,
                        ("objective/kl", "objective/scores", "loss/policy", "loss/value", "grad_norm/policy",
                         "grad_norm/value"))
    assert_same_weights(cw, pw)
