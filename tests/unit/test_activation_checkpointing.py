"""Activation checkpointing (`activation_checkpointing: true` in a trainer's params): every block
runs its forward a second time inside the backward pass, and the loss and every gradient are those
of the plain step, for a causal LM (GPT-2; a Llama with pad == eos), a reward model pooled at the
last token or at [CLS], PPO's per-token critic and a LoRA-adapted model. Sampling and held-out
passes (eval mode, no gradient) run each block once, as before."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf.errors import UserError
from rlhf.logprobs import response_logits
from rlhf.reward import RewardModel
from rlhf.train import with_activation_checkpointing
from tests.chatml import save_tiny_chat_llama
from tests.encoders import save_tiny_bert, train_wordpiece


def gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_layer=3, n_head=2, n_embd=32, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def batch(vocab: int = 64, rows: int = 3, cols: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, vocab, (rows, cols), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # a left-padded row
    return ids, mask


def blocks_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    found = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert found, "no transformer blocks found"
    return found


def forward_counts(model: torch.nn.Module) -> list[int]:
    """A live list: how many times the first layer inside each block has started its forward (the
    block's own hooks stay outside the checkpoint; a recompute stops once it has what it needs)."""
    counts = [0] * len(blocks_of(model))
    for i, block in enumerate(blocks_of(model)):
        first = next(block.children())
        first.register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


def loss_and_grads(model: torch.nn.Module, loss_fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_step(plain: torch.nn.Module, loss_fn) -> None:
    """The checkpointed copy of `plain` gives the same loss and gradients, and recomputes every block."""
    ckpt = with_activation_checkpointing(copy.deepcopy(plain), True)
    counts = forward_counts(ckpt)
    want_loss, want = loss_and_grads(plain, loss_fn)
    got_loss, got = loss_and_grads(ckpt, loss_fn)
    assert counts == [2] * len(counts), f"each block should run twice (forward, then recomputed): {counts}"
    torch.testing.assert_close(got_loss, want_loss, rtol=0, atol=0)
    assert got.keys() == want.keys() and want
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-7, msg=name)


def lm_loss(model: torch.nn.Module) -> torch.Tensor:
    ids, mask = batch(model.config.vocab_size)
    logits = response_logits(model, ids, mask, prompt_len=5, temperature=0.7)  # (B, R, V)
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 5:, None]).mean().neg()


def test_a_causal_lm_recomputes_its_blocks_and_steps_as_the_plain_model():
    assert_same_step(gpt2(), lm_loss)


def test_a_llama_with_pad_equal_to_eos_steps_as_the_plain_model(tmp_path):
    from rlhf.train import load_causal_lm

    llama = load_causal_lm(save_tiny_chat_llama(tmp_path / "llama"))
    assert llama.config.pad_token_id == llama.config.eos_token_id
    assert_same_step(llama, lm_loss)


def test_off_is_the_model_itself_and_eval_passes_run_each_block_once():
    model = gpt2()
    assert with_activation_checkpointing(model, False) is model
    assert not any(b.gradient_checkpointing for b in blocks_of(model))
    ckpt = with_activation_checkpointing(gpt2(), True)
    assert all(b.gradient_checkpointing for b in blocks_of(ckpt))
    counts = forward_counts(ckpt)
    ids, mask = batch()
    with torch.no_grad():
        ckpt.eval()(input_ids=ids, attention_mask=mask)
    assert counts == [1] * len(counts)


@pytest.mark.parametrize("per_token", [False, True], ids=["pooled reward", "per-token critic"])
def test_a_decoder_reward_model_and_the_critic_step_as_the_plain_model(tmp_path, per_token):
    from rlhf.train import build_gpt2, save_model_dir
    from tests.chatml import train_chatml_tokenizer

    tok = train_chatml_tokenizer(["water the fern weekly", "feed the basil"], vocab_size=300)  # pad, eos, no [CLS]
    path = tmp_path / "backbone"
    save_model_dir(path, build_gpt2(tok, 2, 2, 32, 64, seed=0), tok)
    rm = RewardModel.from_backbone(path, tok, seed=0)
    ids, mask = batch(len(tok))
    assert_same_step(rm, lambda m: (m(ids, mask, per_token=per_token) ** 2).mean())


def test_an_encoder_reward_model_pooled_at_cls_steps_as_the_plain_model(tmp_path):
    tok = train_wordpiece(["water the fern weekly", "feed the basil", "i do not know"], vocab_size=120)
    rm = RewardModel.from_backbone(save_tiny_bert(tmp_path / "bert", len(tok), tok), seed=0)
    assert rm.pooling == "cls"
    enc = tok(["water the fern", "feed the basil weekly please"], padding=True, return_tensors="pt")
    assert_same_step(rm, lambda m: (m(enc["input_ids"], enc["attention_mask"]) ** 2).mean())


def test_a_lora_model_passes_gradients_to_its_adapters_as_the_plain_one():
    from rlhf.config.sft import SFTConfig
    from rlhf.train.lora import with_lora

    adapted = with_lora(gpt2(), SFTConfig(lora_r=4, lora_alpha=8.0))
    with torch.no_grad():  # B starts at 0: move it, so that A gets a gradient too
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    ckpt = with_activation_checkpointing(copy.deepcopy(adapted), True)
    _, grads = loss_and_grads(ckpt, lm_loss)
    assert grads and all("lora_" in n for n in grads), sorted(grads)
    assert all(g.abs().sum() > 0 for g in grads.values())
    assert_same_step(adapted, lm_loss)


def test_a_model_without_transformer_blocks_is_refused_with_the_param_named():
    with pytest.raises(UserError, match="activation_checkpointing: false"):
        with_activation_checkpointing(torch.nn.Linear(4, 4), True)
