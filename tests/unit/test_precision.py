"""mixed_precision: 'bf16' is taken on CUDA or on a CPU with native bf16 matmul and refused
elsewhere; under CPU bf16 autocast a model's log-probs stay close to fp32's."""

import pytest
import torch

from rlhf.logprobs import sequence_logprobs
from rlhf.train import runtime


def test_auto_is_fp32_on_cpu_and_no_passes_through(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_mixed_precision("auto") == "no"
    assert runtime.resolve_mixed_precision("no") == "no"


def test_bf16_on_cpu_follows_native_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.resolve_mixed_precision("bf16") == "bf16"
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bf16"):
        runtime.resolve_mixed_precision("bf16")


@pytest.mark.skipif(not runtime.cpu_has_bf16(), reason="this CPU has no native bf16 matmul")
def test_cpu_bf16_autocast_keeps_logprobs_close_to_fp32():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 96, (4, 24))
    mask = torch.ones_like(ids)
    response = torch.zeros_like(ids)
    response[:, 8:] = 1
    accelerator = runtime.make_accelerator("bf16")
    with torch.no_grad():
        fp32 = sequence_logprobs(model, ids, mask, response)  # (B,) summed over 16 response tokens
        with accelerator.autocast():
            bf16 = sequence_logprobs(model, ids, mask, response)
    assert bf16.dtype == torch.float32
    assert not torch.equal(bf16, fp32), "autocast did not run in bf16"
    # per token: within 0.02 nats of fp32 (bf16 keeps ~3 significant digits; log-softmax runs in fp32)
    assert torch.allclose(bf16 / 16, fp32 / 16, atol=0.02), (bf16 - fp32) / 16


@pytest.mark.skipif(not runtime.cpu_has_bf16(), reason="this CPU has no native bf16 matmul")
def test_under_bf16_autocast_a_prepared_policy_and_its_unprepared_reference_agree_at_any_temperature():
    """PPO's policy is prepared by accelerate (its outputs come back in fp32) and its reference is not
    (bf16 logits): equal weights must still give equal tempered log-probs, so that the KL of the
    first rollout is exactly 0."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf.logprobs import logprobs_and_entropy, response_logits

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=96, n_positions=32, n_embd=64, n_layer=2, n_head=4)
    reference = GPT2LMHeadModel(cfg).eval().requires_grad_(False)
    policy = GPT2LMHeadModel(cfg).eval()
    policy.load_state_dict(reference.state_dict())
    accelerator = runtime.make_accelerator("bf16")
    policy = accelerator.prepare(policy)
    ids = torch.randint(0, 96, (3, 20))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # a left-padded prompt
    with torch.no_grad(), accelerator.autocast():
        mine, theirs = (logprobs_and_entropy(response_logits(m, ids, mask, 8, 0.7), ids[:, 8:])[0]
                        for m in (policy, reference))
    assert torch.equal(mine, theirs), (mine - theirs).abs().max()
