"""Divergence is never silent, in every trainer on a tiny model: a NaN loss (or PPO score) at a given
step stops the stage with one message naming stage, step and quantity, before that step is
checkpointed and without a model; the newest checkpoint stays, loads and is resumed; with
`nonfinite: skip` the stage completes, the bad step leaves the weights as they were, and the
metrics count it."""

import math
import shutil
from unittest.mock import Mock

import pytest
import torch

import rlhf.stages.dpo
import rlhf.stages.ppo
import rlhf.stages.reward
import rlhf.stages.sft
from rlhf.config.dpo import DPOConfig
from rlhf.config.ppo import PPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.reward import RewardModel
from rlhf.stages.dpo import run_dpo
from rlhf.stages.ppo import run_ppo
from rlhf.stages.reward import run_reward
from rlhf.stages.sft import run_sft
from rlhf.train import load_causal_lm, lr_factor, optimizer_step
from rlhf.train.checkpoint import list_checkpoints
from rlhf.train.optim import NonFiniteError
from rlhf.train.toy import make_toy_world
from tests.worlds import rl_world

NAN = float("nan")
SFT = dict(n_layer=1, n_head=2, n_embd=32, n_positions=64, max_seq_len=64, batch_size=8, micro_batch_size=4,
           max_steps=6, warmup_steps=1, learning_rate=3e-3, checkpoint_every=2, keep_checkpoints=3, log_every=1,
           sample_count=0, eval_examples=8)
DPO = dict(max_steps=4, batch_size=8, micro_batch_size=4, learning_rate=1e-3, warmup_steps=0, eval_batch_size=8,
           checkpoint_every=2, log_every=1)
RM = dict(max_steps=4, batch_size=8, micro_batch_size=8, warmup_steps=0, learning_rate=2e-3, checkpoint_every=2,
          log_every=1, max_seq_len=64, norm_examples=8)
PPO = dict(max_steps=2, rollout_batch_size=8, mini_batch_size=4, micro_batch_size=4, ppo_epochs=2, max_new_tokens=8,
           checkpoint_every=1, learning_rate=1e-3, temperature=1.0, missing_eos_score=None)  # the RM scores every response


@pytest.fixture()
def world(tmp_path):
    return rl_world(tmp_path)


@pytest.fixture()
def toy(tmp_path):
    """The toy world alone: what SFT starts from."""
    return make_toy_world(tmp_path)


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def nan_loss_at(monkeypatch, stage_module, bad_steps: set[int]) -> dict[int, bool]:
    """Make the loss of this run's optimizer steps `bad_steps` (1-based) NaN: the stage's own loss
    times NaN, through the real backward and `optimizer_step`. Returns {bad step: whether the
    parameters came out of it unchanged}."""
    real, calls, unchanged = stage_module.optimizer_step, [], {}

    def step(model, optimizer, scheduler, accelerator, micro, loss_fn, *args):
        calls.append(len(calls) + 1)
        if calls[-1] not in bad_steps:
            return real(model, optimizer, scheduler, accelerator, micro, loss_fn, *args)

        def nan_loss(m, mb, n):
            loss, metrics = loss_fn(m, mb, n)
            return loss * NAN, metrics

        before = _params(model)
        stats = real(model, optimizer, scheduler, accelerator, micro, nan_loss, *args)
        unchanged[calls[-1]] = torch.equal(_params(model), before)
        return stats

    monkeypatch.setattr(stage_module, "optimizer_step", step)
    return unchanged


def kept_checkpoints(base) -> list:
    """Checkpoints left under `paths.checkpoints(stage)`, in live (not retired) run folders."""
    return [c for root in sorted(base.iterdir()) if not root.name.endswith("-finished") for c in list_checkpoints(root)]


def message(stage: str, quantities: str, step: int, kept: int) -> str:
    return (f"{stage}: non-finite {quantities} at step {step}; the last good checkpoint (step {kept}) is kept, "
            f"no model was written; lower {stage}.learning_rate or set {stage}.nonfinite: skip")


def test_sft_stops_at_a_nan_step_keeps_its_last_checkpoint_and_resumes_from_it(toy, monkeypatch):
    unchanged = nan_loss_at(monkeypatch, rlhf.stages.sft, {5})
    with pytest.raises(NonFiniteError) as err:
        run_sft(SFTConfig(**SFT), toy)
    assert str(err.value) == message("sft", "loss (nan), grad_norm (nan)", 5, 4)
    assert unchanged == {5: True}  # the bad gradient never reached the weights
    assert not (toy.sft / "model").exists()
    assert [c.name for c in kept_checkpoints(toy.checkpoints("sft"))] == ["step-00000002", "step-00000004"]
    kept = load_causal_lm(kept_checkpoints(toy.checkpoints("sft"))[-1])
    assert all(torch.isfinite(p).all() for p in kept.parameters())

    steps = Mock(wraps=optimizer_step)
    monkeypatch.setattr(rlhf.stages.sft, "optimizer_step", steps)  # the real step again: nothing diverges
    out = run_sft(SFTConfig(**SFT), toy)
    assert steps.call_count == 6 - 4  # resumed after the kept step-4 checkpoint
    assert (toy.sft / "model").is_dir() and out.metrics["train/skipped_steps"] == 0


def test_sft_skip_drops_the_nan_step_counts_it_and_keeps_the_schedule(toy, monkeypatch):
    unchanged = nan_loss_at(monkeypatch, rlhf.stages.sft, {3})
    out = run_sft(SFTConfig(**SFT, nonfinite="skip"), toy)
    assert unchanged == {3: True}
    assert out.metrics["train/skipped_steps"] == 1
    assert [h["train/skipped_steps"] for h in out.history] == [0, 0, 1, 1, 1, 1]
    assert math.isnan(out.history[2]["train/grad_norm"]) and math.isfinite(out.history[3]["train/grad_norm"])
    # the schedule advanced over the skipped step: step 4 has the learning rate it has in any run
    assert out.history[3]["train/lr"] == pytest.approx(SFT["learning_rate"] * lr_factor(3, 6, 1, "cosine", 0.1))
    model = load_causal_lm(toy.sft / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(out.metrics["eval/loss/sft"])


def test_dpo_stops_at_a_nan_step_without_a_model(world, monkeypatch):
    unchanged = nan_loss_at(monkeypatch, rlhf.stages.dpo, {3})
    with pytest.raises(NonFiniteError) as err:
        run_dpo(DPOConfig(**DPO), world)
    assert str(err.value) == message("dpo", "loss (nan), grad_norm (nan)", 3, 2)
    assert unchanged == {3: True}
    assert not (world.dpo / "model").exists()
    (kept,) = kept_checkpoints(world.checkpoints("dpo"))
    assert kept.name == "step-00000002"
    assert all(torch.isfinite(p).all() for p in load_causal_lm(kept).parameters())


def test_dpo_skip_completes_with_the_skip_counted(world, monkeypatch):
    unchanged = nan_loss_at(monkeypatch, rlhf.stages.dpo, {2})
    out = run_dpo(DPOConfig(**DPO, nonfinite="skip"), world)
    assert unchanged == {2: True}
    assert out.metrics["train/skipped_steps"] == 1
    assert [h["train/skipped_steps"] for h in out.history] == [0, 1, 1, 1]
    assert math.isnan(out.history[1]["train/grad_norm"]) and math.isfinite(out.history[2]["train/grad_norm"])
    assert math.isfinite(out.metrics["eval/rewards/margins"])
    assert all(torch.isfinite(p).all() for p in load_causal_lm(world.dpo / "model").parameters())


def test_reward_stops_at_a_nan_step_and_skip_counts_it(world, monkeypatch):
    shutil.rmtree(world.reward)  # as `dvc repro` clears a stage's outputs before running it
    unchanged = nan_loss_at(monkeypatch, rlhf.stages.reward, {3})
    with pytest.raises(NonFiniteError) as err:
        run_reward(RewardConfig(**RM), world)
    assert str(err.value) == message("reward", "loss (nan), grad_norm (nan)", 3, 2)
    assert unchanged == {3: True} and not (world.reward / "model").exists()
    (kept,) = kept_checkpoints(world.checkpoints("reward"))
    assert torch.isfinite(_params(RewardModel.from_pretrained(kept))).all()

    unchanged = nan_loss_at(monkeypatch, rlhf.stages.reward, {1})
    with pytest.warns(UserWarning, match="another config"):  # params changed: the kept checkpoints go
        out = run_reward(RewardConfig(**RM, nonfinite="skip"), world)
    assert unchanged == {1: True} and out.metrics["train/skipped_steps"] == 1
    assert torch.isfinite(_params(RewardModel.from_pretrained(world.reward / "model"))).all()


def nan_scores_at(monkeypatch, iterations: set[int]) -> dict[int, bool]:
    """The reward model scores NaN in PPO iterations `iterations` (1-based). Returns {iteration:
    whether its update left the policy and the critic unchanged}."""
    real_score, real_update, calls, unchanged = RewardModel.score_pairs, rlhf.stages.ppo.ppo_update, [], {}

    def score_pairs(self, prompts, responses, *args, **kwargs):
        calls.append(len(calls) + 1)
        scores = real_score(self, prompts, responses, *args, **kwargs)
        return [NAN] * len(scores) if calls[-1] in iterations else scores

    def update(cfg, policy, critic, *args):
        before = (_params(policy), _params(critic))
        stats = real_update(cfg, policy, critic, *args)
        if calls[-1] in iterations:
            unchanged[calls[-1]] = torch.equal(_params(policy), before[0]) and torch.equal(_params(critic), before[1])
        return stats

    monkeypatch.setattr(RewardModel, "score_pairs", score_pairs)
    monkeypatch.setattr(rlhf.stages.ppo, "ppo_update", update)
    return unchanged


def test_ppo_stops_at_a_nan_score_naming_the_reward_model(world, monkeypatch):
    nan_scores_at(monkeypatch, {2})
    with pytest.raises(NonFiniteError, match=(
            r"^ppo: non-finite objective/scores \(nan\), objective/rlhf_reward \(nan\), loss \(nan\), "
            r"grad_norm/policy \(nan\), grad_norm/value \(nan\) at step 2; the last good checkpoint \(step 1\) is "
            r"kept, no model was written; check the reward model in .*reward/model or set ppo.nonfinite: skip$")):
        run_ppo(PPOConfig(**PPO), world)
    assert not (world.ppo / "model").exists()
    (kept,) = kept_checkpoints(world.checkpoints("ppo"))
    assert kept.name == "step-00000001" and torch.isfinite(_params(load_causal_lm(kept))).all()


def test_ppo_skip_drops_every_update_of_a_nan_rollout(world, monkeypatch):
    unchanged = nan_scores_at(monkeypatch, {1})
    out = run_ppo(PPOConfig(**PPO, nonfinite="skip"), world)
    assert unchanged == {1: True}
    updates = PPO["ppo_epochs"] * PPO["rollout_batch_size"] // PPO["mini_batch_size"]
    assert [h["train/skipped_steps"] for h in out.history] == [updates, updates]
    assert out.metrics["train/skipped_steps"] == updates
    assert math.isfinite(out.history[1]["loss/policy"])
    assert torch.isfinite(_params(load_causal_lm(world.ppo / "model"))).all()
