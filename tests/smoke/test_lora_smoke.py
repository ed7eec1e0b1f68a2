"""LoRA through peft in every trainer, on tiny models in a toy world: only the adapter (and a reward
model's head) trains, the base weights stay as they were, the saved model is the merged one (plain
transformers loads it, same logits as the adapted model), the adapter is saved alone when asked,
resuming works, and DPO's / PPO's reference is the base with the adapter disabled, no second copy."""

from __future__ import annotations

import copy
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
from rlhf.train import build_gpt2, load_causal_lm, load_tokenizer, save_model_dir
from rlhf.train.lora import ADAPTER_CONFIG, ADAPTER_DIR, merged
from rlhf.train.toy import make_toy_world, sft_rows, write_jsonl
from tests.checkpoints import as_if_killed

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
    again = load_causal_lm(paths.sft / "model").state_dict()
    for k in full:
        torch.testing.assert_close(again[k], full[k], rtol=1e-5, atol=1e-6, msg=k)
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
