"""A few DPO steps on a tiny GPT-2 in a toy world: finite loss, the policy moves, SFT stays put."""

import math
import shutil
from unittest.mock import Mock

import pytest
import torch

import rlhf.stages.dpo
from rlhf.config.dpo import DPOConfig
from rlhf.stages.dpo import run_dpo
from rlhf.train import build_gpt2, load_causal_lm, load_tokenizer, save_model_dir
from rlhf.train.toy import make_toy_world
from tests.checkpoints import as_if_killed
from tests.spies import record_adamw


@pytest.fixture()
def world(tmp_path):
    paths = make_toy_world(tmp_path, n_sft=16, n_pref=24)
    tok = load_tokenizer(paths.tokenizer)
    save_model_dir(paths.sft / "model", build_gpt2(tok, 2, 2, 32, 128, seed=0), tok)
    return paths


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("extra", [
    {}, {"loss_type": "ipo"}, {"label_smoothing": 0.1, "precompute_ref_logprobs": False},
])
def test_dpo_few_steps(world, extra):
    cfg = DPOConfig(epochs=1, max_steps=None, batch_size=8, micro_batch_size=4, learning_rate=1e-3,
                    warmup_steps=0, eval_batch_size=8, **extra)
    before = _params(load_causal_lm(world.sft / "model"))
    out = run_dpo(cfg, world)
    assert out.models == {"rlhf-dpo": world.dpo / "model"}
    assert len(out.history) == 3 and all(math.isfinite(h["loss/dpo"]) for h in out.history)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected"):
        assert key in out.history[-1]
    assert 0.0 <= out.metrics["eval/rewards/accuracies"] <= 1.0
    # the first step starts at the reference: loss log 2 (DPO) or (1/(2 beta))^2 (IPO)
    first = out.history[0]["loss/dpo"]
    expected = (1 / (2 * cfg.beta)) ** 2 if cfg.loss_type == "ipo" else math.log(2)
    assert first == pytest.approx(expected, rel=1e-4)
    trained = _params(load_causal_lm(world.dpo / "model"))
    assert not torch.equal(trained, before)
    torch.testing.assert_close(_params(load_causal_lm(world.sft / "model")), before, rtol=0, atol=0)


def test_dpo_resumes_to_the_same_weights(world, monkeypatch):
    cfg = DPOConfig(epochs=2, max_steps=None, batch_size=8, micro_batch_size=8, learning_rate=1e-3,
                    warmup_steps=0, eval_batch_size=8, checkpoint_every=2, keep_checkpoints=3)
    run_dpo(cfg, world)
    full = _params(load_causal_lm(world.dpo / "model"))
    (kept,) = as_if_killed(world.checkpoints("dpo"))  # killed after the step-2 checkpoint
    assert kept.name == "step-00000002"
    shutil.rmtree(world.dpo)  # as `dvc repro` clears a stage's outputs before rerunning it
    steps = Mock(wraps=rlhf.stages.dpo.optimizer_step)
    monkeypatch.setattr(rlhf.stages.dpo, "optimizer_step", steps)
    run_dpo(cfg, world)
    assert steps.call_count == 6 - 2  # 2 epochs of 3 steps, resumed after step 2
    torch.testing.assert_close(_params(load_causal_lm(world.dpo / "model")), full)


def test_dpo_disabled_writes_skipped(world):
    out = run_dpo(DPOConfig(enabled=False), world)
    assert (world.dpo / "SKIPPED").is_file() and not (world.dpo / "model").exists()
    assert out.models == {}


@pytest.mark.parametrize("max_steps", [2, 5])
def test_dpo_max_steps_overrides_epochs(world, max_steps):
    """24 pairs in batches of 8 are 3 steps an epoch: max_steps stops early or runs into epoch 2."""
    cfg = DPOConfig(epochs=1, max_steps=max_steps, batch_size=8, micro_batch_size=8, learning_rate=1e-3,
                    warmup_steps=0, eval_batch_size=8)
    out = run_dpo(cfg, world)
    assert [h["step"] for h in out.history] == list(range(1, max_steps + 1))
    assert out.history[-1]["train/epoch"] == pytest.approx(max_steps / 3)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_dpo_honours_the_shared_training_fields(world, schedule, monkeypatch):
    """Schedule, AdamW settings, log_every and keep_checkpoints come from the config (DPO once
    hard-coded a linear schedule and the optimizer defaults)."""
    built = record_adamw(monkeypatch)
    cfg = DPOConfig(max_steps=4, batch_size=8, micro_batch_size=8, learning_rate=1e-3, warmup_steps=0,
                    schedule=schedule, min_lr_ratio=0.5, adam_beta1=0.8, adam_beta2=0.9, adam_eps=1e-6,
                    eval_batch_size=8, log_every=2, checkpoint_every=1, keep_checkpoints=1)
    out = run_dpo(cfg, world)
    assert built == [{"lr": 1e-3, "betas": (0.8, 0.9), "eps": 1e-6, "fused": True}]
    assert [h["step"] for h in out.history] == [2, 4]
    lrs = [h["train/lr"] for h in out.history]
    if schedule == "constant":
        assert lrs == [1e-3, 1e-3]
    else:
        assert 1e-3 > lrs[0] > lrs[1] >= 0.5e-3
    (finished,) = world.checkpoints("dpo").iterdir()
    assert len([p for p in finished.iterdir() if p.name.startswith("step-")]) == 1


def test_precomputed_reference_covers_only_the_visited_pairs(world, tmp_path_factory, monkeypatch):
    """With max_steps short of an epoch, the reference log-probs are computed for the pairs the
    steps visit and no others, and the run's curve is the one of a run that computes them on the fly."""
    cfg = dict(max_steps=2, batch_size=8, micro_batch_size=4, learning_rate=1e-3, warmup_steps=0, eval_batch_size=8)
    other = tmp_path_factory.mktemp("other") / "world"
    shutil.copytree(world.root, other)
    scored: list[int] = []
    real = rlhf.stages.dpo.pair_logprobs

    def spy(model, pairs, pad_id, batch_size, device, only=None, **kwargs):
        scored.append(len(pairs) if only is None else len(set(only)))
        return real(model, pairs, pad_id, batch_size, device, only, **kwargs)

    monkeypatch.setattr(rlhf.stages.dpo, "pair_logprobs", spy)
    precomputed = run_dpo(DPOConfig(**cfg), world)
    assert scored[0] == 2 * 8 < 24  # the train pairs of 2 steps out of 24 (then the held-out pairs)
    on_the_fly = run_dpo(DPOConfig(**cfg, precompute_ref_logprobs=False), type(world)(other))
    for a, b in zip(precomputed.history, on_the_fly.history):
        assert a["loss/dpo"] == pytest.approx(b["loss/dpo"], rel=1e-5)
