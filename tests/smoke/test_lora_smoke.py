"""LoRA through peft in every trainer, on tiny models in a toy world: only the adapter (and a reward
model's head) trains, the base weights stay as they were, the saved model is the merged one (plain
transformers loads it, same logits as the adapted model), the adapter is saved alone when asked,
resuming works, and DPO's / PPO's reference is the base with the adapter disabled, no second copy."""

from __future__ import annotations

import math
import shutil
from unittest.mock import Mock

import pytest
import torch
from transformers import AutoModelForCausalLM

import rlhf.stages.dpo
import rlhf.stages.ppo
import rlhf.stages.reward
import rlhf.stages.sft
from rlhf.config.dpo import DPOConfig
from rlhf.config.ppo import PPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.reward import RewardModel
from rlhf.train import build_gpt2, load_causal_lm, load_tokenizer
from rlhf.train.lora import ADAPTER_CONFIG, ADAPTER_DIR
from rlhf.train.toy import make_toy_world
from tests.checkpoints import as_if_killed
from tests.worlds import rl_world

LORA = dict(lora_r=4, lora_alpha=8.0, save_adapter=True)
SFT = dict(n_layer=1, n_head=2, n_embd=32, n_positions=64, max_seq_len=64, batch_size=8, micro_batch_size=4,
           max_steps=6, warmup_steps=1, learning_rate=1e-2, checkpoint_every=3, sample_count=0, eval_examples=8)


def spy_on(monkeypatch, module, name: str) -> list[tuple[object, dict[str, torch.Tensor]]]:
    """Record every model `module.<name>` returns, with a copy of its weights at that moment."""
    real, made = getattr(module, name), []

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        made.append((model, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return model

    monkeypatch.setattr(module, name, spy)
    return made


def assert_only_adapter_trained(model, before: dict[str, torch.Tensor], trainable_extra: tuple[str, ...] = ()):
    after = model.state_dict()
    assert after.keys() == before.keys()
    lora = [k for k in after if "lora_" in k]
    assert lora, "no LoRA weights"
    assert any(not torch.equal(after[k], before[k]) for k in lora if "lora_B" in k), "the adapter did not train"
    for k in after:
        if "lora_" not in k and not k.startswith(trainable_extra):
            assert torch.equal(after[k], before[k]), f"base weight {k} changed"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith(trainable_extra) for n in trainable), trainable


def assert_same_weights(again: dict[str, torch.Tensor], full: dict[str, torch.Tensor]) -> None:
    """A resumed run's saved weights equal the uninterrupted run's (CPU: up to float noise)."""
    assert again.keys() == full.keys()
    for k in full:
        torch.testing.assert_close(again[k], full[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


# ---------------------------------------------------------------- SFT
def test_sft_lora_trains_only_the_adapter_and_saves_the_merged_model(tmp_path, monkeypatch):
    paths = make_toy_world(tmp_path)
    made = spy_on(monkeypatch, rlhf.stages.sft, "with_lora")
    out = rlhf.stages.sft.run_sft(SFTConfig(**SFT, **LORA), paths)
    ((adapted, before),) = made
    assert_only_adapter_trained(adapted, before)
    assert all(math.isfinite(h["loss/sft"]) for h in out.history)

    saved = AutoModelForCausalLM.from_pretrained(paths.sft / "model", local_files_only=True)  # plain transformers
    assert not any("lora_" in k for k in saved.state_dict())
    ids = torch.tensor([load_tokenizer(paths.tokenizer).encode("How do I water a fern?")])
    torch.testing.assert_close(logits(saved, ids), logits(adapted.eval(), ids), rtol=1e-4, atol=1e-5)
    base = build_gpt2(load_tokenizer(paths.tokenizer), 1, 2, 32, 64, seed=0)
    assert not torch.allclose(logits(saved, ids), logits(base, ids)), "the merged model is the base"

    from peft import PeftModel

    assert (paths.sft / ADAPTER_DIR / ADAPTER_CONFIG).is_file()
    again = PeftModel.from_pretrained(base, str(paths.sft / ADAPTER_DIR)).eval()  # base + the saved adapter
    torch.testing.assert_close(logits(again, ids), logits(saved, ids), rtol=1e-4, atol=1e-5)


def test_sft_lora_resumes_from_an_adapter_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    paths = make_toy_world(tmp_path)
    cfg = SFTConfig(**SFT, **{**LORA, "save_adapter": False})
    rlhf.stages.sft.run_sft(cfg, paths)
    full = load_causal_lm(paths.sft / "model").state_dict()
    (kept,) = as_if_killed(paths.checkpoints("sft"))  # killed after the step-3 checkpoint
    assert (kept / ADAPTER_CONFIG).is_file() and not (kept / "model.safetensors").exists()  # adapter only
    shutil.rmtree(paths.sft)
    steps = Mock(wraps=rlhf.stages.sft.optimizer_step)
    monkeypatch.setattr(rlhf.stages.sft, "optimizer_step", steps)
    rlhf.stages.sft.run_sft(cfg, paths)
    assert steps.call_count == 3
    assert_same_weights(load_causal_lm(paths.sft / "model").state_dict(), full)
    assert not (paths.sft / ADAPTER_DIR).exists()


def test_full_fine_tuning_is_the_default(tmp_path, monkeypatch):
    cfg = SFTConfig(**{**SFT, "max_steps": 2})
    assert cfg.lora_r == 0 and cfg.save_adapter is False
    paths = make_toy_world(tmp_path)
    made = spy_on(monkeypatch, rlhf.stages.sft, "with_lora")
    rlhf.stages.sft.run_sft(cfg, paths)
    ((model, _),) = made
    assert type(model).__name__ == "GPT2LMHeadModel" and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="save_adapter needs an adapter"):
        SFTConfig(save_adapter=True)


# ---------------------------------------------------------------- reward, DPO and PPO on a saved SFT model
@pytest.fixture()
def world(tmp_path):
    return rl_world(tmp_path)


def assert_reference_is_base_and_output_merged(world, stage_dir, reference, policy):
    """The reference equals the SFT base exactly, the adapted policy moved, and the stage's merged
    output (plain transformers) gives the adapted logits; the adapter is saved beside it."""
    ids = sample_ids(world)
    base = load_causal_lm(world.sft / "model")
    torch.testing.assert_close(logits(reference, ids), logits(base, ids), rtol=0, atol=0)
    adapted = logits(policy.eval(), ids)
    assert not torch.allclose(adapted, logits(base, ids)), "the policy did not move"
    saved = AutoModelForCausalLM.from_pretrained(stage_dir / "model", local_files_only=True)
    torch.testing.assert_close(logits(saved, ids), adapted, rtol=1e-4, atol=1e-5)
    assert (stage_dir / ADAPTER_DIR / ADAPTER_CONFIG).is_file()


def record_references(monkeypatch, module) -> list:
    """Every `AdapterOff` reference `module` builds."""
    real, made = module.AdapterOff, []

    def spy(model):
        made.append(real(model))
        return made[-1]

    monkeypatch.setattr(module, "AdapterOff", spy)
    return made


def sample_ids(paths) -> torch.Tensor:
    return torch.tensor([load_tokenizer(paths.tokenizer).encode("When should I feed my basil? Feed it.")])


RM = dict(max_steps=6, batch_size=8, micro_batch_size=4, warmup_steps=1, learning_rate=1e-2, checkpoint_every=3,
          max_seq_len=64, norm_examples=8)


def test_reward_lora_trains_the_adapter_and_the_head(world, monkeypatch):
    from transformers import AutoModel

    made = spy_on(monkeypatch, rlhf.stages.reward, "with_reward_lora")
    out = rlhf.stages.reward.run_reward(RewardConfig(**RM, **LORA), world)
    ((adapted, before),) = made
    assert_only_adapter_trained(adapted, before, trainable_extra=("head.",))
    assert not torch.equal(adapted.head.weight, before["head.weight"]), "the head did not train"

    saved = RewardModel.from_pretrained(world.reward / "model")  # merged backbone + head
    assert not any("lora_" in k for k in AutoModel.from_pretrained(world.reward / "model").state_dict())
    seqs = [saved.encode("How do I water a fern?", r) for r in ("Water it weekly.", "I do not know.")]
    torch.testing.assert_close(saved.raw_scores(seqs), adapted.raw_scores(seqs), rtol=1e-4, atol=1e-5)
    assert saved.norm["mean"] == pytest.approx(out.metrics["reward_model/norm_mean"])
    from rlhf.reward.model import HEAD_FILE
    from rlhf.train.lora import with_reward_lora

    base = RewardModel.from_backbone(world.sft / "model", load_tokenizer(world.tokenizer), seed=0)
    again = with_reward_lora(base, RewardConfig(**RM, **LORA), world.reward / ADAPTER_DIR, HEAD_FILE)
    torch.testing.assert_close(again.raw_scores(seqs), saved.raw_scores(seqs), rtol=1e-4, atol=1e-5)


def test_reward_lora_resumes_to_the_same_model(world, monkeypatch):
    cfg = RewardConfig(**RM, **{**LORA, "save_adapter": False})
    rlhf.stages.reward.run_reward(cfg, world)
    full = RewardModel.from_pretrained(world.reward / "model").state_dict()
    as_if_killed(world.checkpoints("reward"))
    shutil.rmtree(world.reward / "model")
    steps = Mock(wraps=rlhf.stages.reward.optimizer_step)
    monkeypatch.setattr(rlhf.stages.reward, "optimizer_step", steps)
    rlhf.stages.reward.run_reward(cfg, world)
    assert steps.call_count == 3
    assert_same_weights(RewardModel.from_pretrained(world.reward / "model").state_dict(), full)


DPO = dict(epochs=1, max_steps=None, batch_size=8, micro_batch_size=4, learning_rate=1e-2, warmup_steps=0,
           eval_batch_size=8, checkpoint_every=1)


@pytest.mark.parametrize("precompute", [True, False])
def test_dpo_lora_reference_is_the_base_with_the_adapter_off(world, monkeypatch, precompute):
    loads = Mock(wraps=rlhf.stages.dpo.load_causal_lm)
    monkeypatch.setattr(rlhf.stages.dpo, "load_causal_lm", loads)
    made = spy_on(monkeypatch, rlhf.stages.dpo, "with_lora")
    refs = record_references(monkeypatch, rlhf.stages.dpo)
    out = rlhf.stages.dpo.run_dpo(DPOConfig(**DPO, **LORA, precompute_ref_logprobs=precompute), world)
    assert loads.call_count == 1, "a second model was built for the reference"
    ((policy, before),), (reference,) = made, refs
    assert_only_adapter_trained(policy, before)
    assert out.history[0]["loss/dpo"] == pytest.approx(math.log(2), rel=1e-4)  # starts at pi_ref

    assert_reference_is_base_and_output_merged(world, world.dpo, reference, policy)


def test_dpo_lora_resumes_to_the_same_weights(world, monkeypatch):
    cfg = DPOConfig(**{**DPO, "epochs": 2, "checkpoint_every": 2, "keep_checkpoints": 3}, lora_r=4, lora_alpha=8.0)
    rlhf.stages.dpo.run_dpo(cfg, world)
    full = load_causal_lm(world.dpo / "model").state_dict()
    (kept,) = as_if_killed(world.checkpoints("dpo"))
    assert kept.name == "step-00000002" and (kept / ADAPTER_CONFIG).is_file()
    shutil.rmtree(world.dpo)
    steps = Mock(wraps=rlhf.stages.dpo.optimizer_step)
    monkeypatch.setattr(rlhf.stages.dpo, "optimizer_step", steps)
    rlhf.stages.dpo.run_dpo(cfg, world)
    assert steps.call_count == 6 - 2
    assert_same_weights(load_causal_lm(world.dpo / "model").state_dict(), full)


PPO = dict(max_steps=2, rollout_batch_size=8, mini_batch_size=4, micro_batch_size=2, ppo_epochs=2,
           max_new_tokens=8, checkpoint_every=1, learning_rate=1e-2, value_learning_rate=1e-2, temperature=1.0)


def test_ppo_lora_policy_and_critic_train_adapters_against_the_base(world, monkeypatch):
    loads = Mock(wraps=rlhf.stages.ppo.load_causal_lm)
    monkeypatch.setattr(rlhf.stages.ppo, "load_causal_lm", loads)
    policies = spy_on(monkeypatch, rlhf.stages.ppo, "with_lora")
    critics = spy_on(monkeypatch, rlhf.stages.ppo, "with_reward_lora")
    refs = record_references(monkeypatch, rlhf.stages.ppo)
    out = rlhf.stages.ppo.run_ppo(PPOConfig(**PPO, **LORA), world)
    assert loads.call_count == 1, "a second model was built for the reference"
    ((policy, p_before),), ((critic, c_before),), (reference,) = policies, critics, refs
    assert_only_adapter_trained(policy, p_before)
    assert_only_adapter_trained(critic, c_before, trainable_extra=("head.",))
    assert out.history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at first

    assert_reference_is_base_and_output_merged(world, world.ppo, reference, policy)


def test_ppo_lora_resumes_to_the_same_weights(world, monkeypatch):
    cfg = PPOConfig(**{**PPO, "max_steps": 3}, keep_checkpoints=3, lora_r=4, lora_alpha=8.0)
    rlhf.stages.ppo.run_ppo(cfg, world)
    full = load_causal_lm(world.ppo / "model").state_dict()
    (kept,) = as_if_killed(world.checkpoints("ppo"))
    assert (kept / ADAPTER_CONFIG).is_file() and (kept / "value" / ADAPTER_CONFIG).is_file()
    shutil.rmtree(world.ppo)
    updates = Mock(wraps=rlhf.stages.ppo.ppo_update)
    monkeypatch.setattr(rlhf.stages.ppo, "ppo_update", updates)
    rlhf.stages.ppo.run_ppo(cfg, world)
    assert updates.call_count == 3 - 1
    assert_same_weights(load_causal_lm(world.ppo / "model").state_dict(), full)
