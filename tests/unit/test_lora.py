"""`rlhf.train.lora` on a tiny Llama built from a config, and the LoRA keys of `TrainConfig`."""

from __future__ import annotations

import pytest
import torch

from rlhf.config.base import ConfigError, build_config
from rlhf.config.dpo import DPOConfig
from rlhf.train.lora import AdapterOff, merged, transformers_model, with_lora


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def moved(peft_model):
    """The adapter off zero (B = 0 at creation makes the adapted model equal its base)."""
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return peft_model


IDS = torch.tensor([[1, 5, 9, 2, 7, 3]])


def out(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_lora_off_is_the_model_itself():
    model = tiny_llama()
    assert with_lora(model, DPOConfig()) is model
    assert merged(model) is model and transformers_model(model) is model


def test_named_targets_get_adapters_and_everything_else_freezes():
    cfg = DPOConfig(lora_r=2, lora_alpha=4.0, lora_target_modules=["q_proj", "v_proj"])
    policy = with_lora(tiny_llama(), cfg)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and (".q_proj." in n or ".v_proj." in n) for n in trainable)
    assert len(trainable) == 2 * 2 * 2  # A and B, of q and v, in 2 layers
    everything = with_lora(tiny_llama(), DPOConfig(lora_r=2))  # all-linear: every projection, not the LM head
    names = {n for n, p in everything.named_parameters() if p.requires_grad}
    assert any(".mlp.down_proj." in n for n in names) and not any("lm_head" in n for n in names)


def test_reference_is_the_base_and_merged_is_the_adapted_model():
    base = out(tiny_llama())
    policy = with_lora(tiny_llama(), DPOConfig(lora_r=4, lora_alpha=8.0))
    torch.testing.assert_close(out(policy), base, rtol=0, atol=0)  # B = 0: starts at the base
    moved(policy)
    adapted = out(policy)
    assert not torch.allclose(adapted, base)
    reference = AdapterOff(policy)
    torch.testing.assert_close(out(reference), base, rtol=0, atol=0)
    torch.testing.assert_close(out(policy), adapted, rtol=0, atol=0)  # the adapter is back on afterwards
    assert not hasattr(reference, "requires_grad_") and not hasattr(reference, "to")  # cannot freeze the policy
    plain = merged(policy)
    assert type(plain).__name__ == "LlamaForCausalLM" and not any("lora_" in k for k in plain.state_dict())
    torch.testing.assert_close(out(plain), adapted, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out(policy), adapted, rtol=0, atol=0)  # merging worked on a copy
    inner = transformers_model(policy)
    assert type(inner).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(out(inner), adapted, rtol=0, atol=0)  # its layers carry the adapter


@pytest.mark.parametrize("value, message", [
    ({"lora_r": -1}, "lora_r"), ({"lora_target_modules": "all"}, "lora_target_modules"),
    ({"lora_target_modules": []}, "at least one module"), ({"save_adapter": True}, "save_adapter needs"),
    ({"lora_alpha": 0.0}, "lora_alpha"),
])
def test_bad_lora_keys_are_named(value, message):
    with pytest.raises(ConfigError, match=message):
        build_config(DPOConfig, "dpo", value, "params.yaml")


def test_lora_keys_default_to_full_fine_tuning():
    cfg = DPOConfig()
    assert (cfg.lora_r, cfg.lora_target_modules, cfg.save_adapter) == (0, "all-linear", False)
    assert build_config(DPOConfig, "dpo", {"lora_r": 8, "lora_target_modules": ["q_proj"]}, "p").lora_target_modules == ["q_proj"]
