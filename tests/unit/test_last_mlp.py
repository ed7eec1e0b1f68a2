"""The last block's MLP run at the read positions only (rlhf/train/last_mlp.py) gives the rewards,
logits and gradients of the plain pass, which runs it everywhere (a reward model's `per_token=True`
and a causal LM's full logits read that pass)."""

import copy
from contextlib import nullcontext

import pytest
import torch

from rlhf.reward.model import RewardModel
from rlhf.train.last_mlp import last_mlp, mlp_at, mlp_from
from rlhf.train import collate_preference_batch, pad
from rlhf.train.batching import position_ids
from rlhf.train.models import with_activation_checkpointing
from rlhf.train.toy import pref_rows
from tests.unit.test_reward_model import encoder_dir, gpt2_dir, llama_dir, tok  # noqa: F401 (fixtures)


def reward_model(name, tok, request):  # noqa: F811
    own = name != "gpt2_dir"  # the Llama scores with its own tokenizer and chat template
    return RewardModel.from_backbone(request.getfixturevalue(name), tokenizer=None if own else tok, seed=0)


def pair_batch(rm, share):
    rows = pref_rows(4)
    chosen = [rm.encode(r["prompt"], r["chosen"]) for r in rows]
    rejected = [rm.encode(r["prompt"], r["rejected"])[:-3] for r in rows]  # unequal lengths: padding
    return collate_preference_batch(chosen, rejected, rm.tokenizer.pad_token_id, share)


def rewards_and_grads(rm, batch, plain: bool):
    rm.zero_grad(set_to_none=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    extra = {"position_ids": batch["position_ids"]} if "position_ids" in batch else {}
    if "score_index" in batch:
        index = batch["score_index"]  # (B, 2)
    else:
        index = rm.pooled_index(ids, mask)[:, None]  # (2B, 1)
    rows = torch.arange(len(index))[:, None]
    if plain:  # every position through the whole network, then the read ones picked
        rewards = rm(ids, mask, per_token=True, **extra)[rows, index]
    else:
        rewards = rm(ids, mask, score_index=index, **extra) if "score_index" in batch else rm(ids, mask)[:, None]
    (rewards * torch.linspace(-1.0, 2.0, rewards.numel()).view_as(rewards)).sum().backward()
    return rewards.detach(), {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["gpt2_dir", "llama_dir"])
@pytest.mark.parametrize("share", [True, False])
def test_reward_model_rewards_and_gradients_match_the_plain_pass(name, share, tok, request):  # noqa: F811
    rm = reward_model(name, tok, request)
    assert last_mlp(rm.backbone) is not None
    batch = pair_batch(rm, share)
    plain, plain_grads = rewards_and_grads(rm, batch, plain=True)
    widths = []  # what the MLP returns, before the scatter back
    last_mlp(rm.backbone).register_forward_hook(lambda _m, _args, out: widths.append(out.shape[1]))
    scored, scored_grads = rewards_and_grads(rm, batch, plain=False)
    assert widths == [2 if share else 1]  # the scored positions of each row only
    torch.testing.assert_close(scored, plain, rtol=1e-5, atol=1e-6)
    assert scored_grads.keys() == plain_grads.keys() and len(scored_grads) > 10
    for n in plain_grads:
        torch.testing.assert_close(scored_grads[n], plain_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    assert len(last_mlp(rm.backbone)._forward_hooks) == 1 and not last_mlp(rm.backbone)._forward_pre_hooks


def test_the_mlp_sees_only_the_scored_rows_and_the_others_get_zeros(gpt2_dir, tok):  # noqa: F811
    rm = RewardModel.from_backbone(gpt2_dir, tokenizer=tok, seed=0)
    mlp, seen = last_mlp(rm.backbone), []
    handle = mlp.register_forward_hook(lambda _m, args, out: seen.append((args[0].shape, out.shape)))
    x = torch.randn(3, 7, mlp.c_fc.weight.shape[0])
    index = torch.tensor([[6, 2], [0, 5], [4, 3]])
    with mlp_at(mlp, index):
        out = mlp(x)
    handle.remove()
    assert seen == [(torch.Size([3, 2, x.shape[-1]]), torch.Size([3, 2, x.shape[-1]]))]  # the gathered rows
    rows = torch.arange(3)[:, None]
    torch.testing.assert_close(out[rows, index], mlp(x)[rows, index])
    untouched = torch.ones(3, 7, dtype=torch.bool)
    untouched[rows, index] = False
    assert out[untouched].abs().max() == 0


def test_encoders_and_expert_blocks_keep_the_plain_pass(encoder_dir):  # noqa: F811
    from transformers import MixtralConfig, MixtralModel

    assert last_mlp(RewardModel.from_backbone(encoder_dir).backbone) is None  # pools at [CLS]: no `mlp`
    moe = MixtralModel(MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=2, num_local_experts=2))
    assert last_mlp(moe) is None  # tokens routed to experts: left whole


def test_activation_checkpointing_recomputes_the_same_rows_and_steps_as_the_plain_pass(gpt2_dir, tok):  # noqa: F811
    rm = RewardModel.from_backbone(gpt2_dir, tokenizer=tok, seed=0)
    batch = pair_batch(rm, share=True)
    plain, plain_grads = rewards_and_grads(rm, batch, plain=True)
    checkpointed = with_activation_checkpointing(copy.deepcopy(rm).train(), True)
    widths = []  # what the MLP's first layer gets (a recompute stops once it has what the backward needs)
    mlp = last_mlp(checkpointed.backbone)
    mlp.c_fc.register_forward_pre_hook(lambda _m, args: widths.append(args[0].shape[1]))
    rewards, grads = rewards_and_grads(checkpointed, batch, plain=False)
    assert widths == [2, 2]  # the two read rows, in the forward pass and in its recomputation
    torch.testing.assert_close(rewards, plain, rtol=1e-5, atol=1e-6)
    for n in plain_grads:
        torch.testing.assert_close(grads[n], plain_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    _, again = rewards_and_grads(copy.deepcopy(rm).train(), batch, plain=False)  # the same step, not checkpointed
    for n in again:
        torch.testing.assert_close(grads[n], again[n], rtol=1e-6, atol=1e-7, msg=n)


def test_a_model_checkpointed_without_the_replay_keeps_the_plain_pass(gpt2_dir, tok):  # noqa: F811
    rm = RewardModel.from_backbone(gpt2_dir, tokenizer=tok, seed=0).train()
    rm.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    widths = []
    last_mlp(rm.backbone).c_fc.register_forward_pre_hook(lambda _m, args: widths.append(args[0].shape[1]))
    batch = pair_batch(rm, share=True)
    rewards_and_grads(rm, batch, plain=False)
    assert widths == [batch["input_ids"].shape[1]] * 2  # every position, in the forward pass and again


def test_scoring_api_reads_the_same_rewards_as_the_plain_pass(gpt2_dir, tok):  # noqa: F811
    rm = RewardModel.from_backbone(gpt2_dir, tokenizer=tok, seed=0)
    seqs = [rm.encode(r["prompt"], r["chosen"]) for r in pref_rows(3)]
    seqs[0] = seqs[0][:-4]
    ids, mask = pad(seqs, tok.pad_token_id), pad([[1] * len(s) for s in seqs], 0)
    with torch.no_grad():
        plain = rm(ids, mask, per_token=True)[torch.arange(3), rm.pooled_index(ids, mask)]
    torch.testing.assert_close(rm.raw_scores(seqs), plain, rtol=1e-5, atol=1e-6)


def test_the_mlp_from_a_position_sees_only_the_rest_and_earlier_ones_get_zeros(gpt2_dir, tok):  # noqa: F811
    rm = RewardModel.from_backbone(gpt2_dir, tokenizer=tok, seed=0)
    mlp = last_mlp(rm.backbone)
    x = torch.randn(2, 9, mlp.c_fc.weight.shape[0])
    with mlp_from(mlp, 6):
        out = mlp(x)
    assert out.shape == x.shape and out[:, :6].abs().max() == 0
    torch.testing.assert_close(out[:, 6:], mlp(x)[:, 6:])


def lm_grads(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(got, want):
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    assert got[1].keys() == want[1].keys() and len(want[1]) > 10
    for n in want[1]:
        torch.testing.assert_close(got[1][n], want[1][n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", ["gpt2_dir", "llama_dir"])
def test_response_log_probs_and_the_sft_loss_match_the_plain_pass(name, request, monkeypatch):
    from rlhf.logprobs import response_logits
    from rlhf.losses.sft import first_scored_position
    from rlhf.stages.sft import micro_batch_loss
    from rlhf.train import collate_sft, load_causal_lm, load_tokenizer

    path = request.getfixturevalue(name)
    model = load_causal_lm(path)
    mlp, widths = last_mlp(model), []
    mlp.register_forward_hook(lambda _m, _args, out: widths.append(out.shape[1]))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (3, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded prompt
    targets = ids[:, 8:]  # a response of 4 after a prompt of 8

    def response_loss(full: bool):
        def loss(m):
            if full:  # every position through the whole network, then the response's logits picked
                logits = m(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                           use_cache=False).logits[:, 7:-1]
            else:
                logits = response_logits(m, ids, mask, prompt_len=8)
            return torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean().neg()
        return loss

    plain = lm_grads(model, response_loss(full=True))
    got = lm_grads(model, response_loss(full=False))
    assert widths == [12, 5]  # every position, then positions 7 .. 11, whose logits are kept
    assert_same(got, plain)

    rows = [{"input_ids": r, "loss_mask": [0] * 6 + [1] * (len(r) - 6)} for r in
            (torch.randint(3, model.config.vocab_size, (n,), generator=gen).tolist() for n in (14, 11, 16))]
    mb = collate_sft(rows, load_tokenizer(path).pad_token_id)
    start = first_scored_position(mb["loss_mask"])
    widths.clear()
    got = lm_grads(model, lambda m: micro_batch_loss(m, mb, 30.0)[0])
    assert start > 0 and widths == [mb["input_ids"].shape[1] - start]
    monkeypatch.setattr("rlhf.stages.sft.read_from", lambda _model, _start: nullcontext())  # the plain pass
    widths.clear()
    plain = lm_grads(model, lambda m: micro_batch_loss(m, mb, 30.0)[0])
    assert widths == [mb["input_ids"].shape[1]]
    assert_same(got, plain)


@pytest.mark.parametrize("name", ["gpt2_dir", "llama_dir"])
def test_ppo_critic_values_from_a_column_match_the_plain_pass(name, tok, request):  # noqa: F811
    from rlhf.stages.ppo_update import token_values

    critic = reward_model(name, tok, request)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, len(critic.tokenizer), (3, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a left-padded prompt

    def loss(start):
        def fn(m):
            values = token_values(m, ids, mask, start)[:, 5:-1]  # (B, R): the columns PPO reads
            return (values * torch.linspace(-1.0, 1.0, values.numel()).view_as(values)).sum()
        return fn

    widths = []
    last_mlp(critic.backbone).register_forward_hook(lambda _m, _args, out: widths.append(out.shape[1]))
    plain, got = lm_grads(critic, loss(0)), lm_grads(critic, loss(5))
    assert widths == [10, 5]  # every column, then columns 5 ..
    assert_same(got, plain)
