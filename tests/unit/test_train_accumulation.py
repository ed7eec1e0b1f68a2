"""Gradient accumulation normalised over the whole optimizer step equals one big batch (STYLE rule 8)."""

import copy

import pytest
import torch

from rlhf.chat import prompt_text, response_text
from rlhf.losses.reward import bradley_terry_loss
from rlhf.losses.sft import sft_loss
from rlhf.tokenizer import train_tokenizer
from rlhf.train import build_gpt2, collate_pairs, collate_sft, encode_sft_example, make_accelerator, optimizer_step
from rlhf.train.toy import sft_rows


@pytest.fixture(scope="module")
def setup():
    rows = sft_rows(8, seed=5)
    for i, r in enumerate(rows):  # very unequal response lengths across micro-batches
        r["response"] = " ".join([r["response"]] * (1 + 3 * (i % 4 == 0)))
    tok = train_tokenizer([prompt_text(r["prompt"]) + response_text(r["response"]) for r in rows],
                          vocab_size=350, min_frequency=1)
    exs = [encode_sft_example(tok, r["prompt"], r["response"], 128) for r in rows]
    return tok, exs, build_gpt2(tok, n_layer=1, n_head=2, n_embd=32, n_positions=128, seed=0)


def _sft_loss_fn(model, mb, n):
    logits = model(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"]).logits
    return sft_loss(logits, mb["input_ids"], mb["loss_mask"], n)


def _update(model, micro_batches, loss_fn, units):
    """Parameter change of one SGD(lr=1) step, i.e. minus the gradient."""
    model = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    stats = optimizer_step(model, opt, None, make_accelerator("no"), micro_batches, loss_fn, units, None)
    return torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)]), stats


def test_four_micro_batches_of_two_equal_one_batch_of_eight(setup):
    tok, exs, model = setup
    tokens = lambda mb: mb["loss_mask"][:, 1:].sum()  # noqa: E731
    full, stats_full = _update(model, [collate_sft(exs, tok.pad_token_id)], _sft_loss_fn, tokens)
    micro = [collate_sft(exs[i: i + 2], tok.pad_token_id) for i in range(0, 8, 2)]
    accum, stats_accum = _update(model, micro, _sft_loss_fn, tokens)
    torch.testing.assert_close(accum, full, rtol=1e-4, atol=1e-7)
    assert stats_accum["loss"] == pytest.approx(stats_full["loss"], rel=1e-5)
    assert stats_accum["loss/sft"] == pytest.approx(stats_full["loss/sft"], rel=1e-5)
    # the per-micro-batch mean (TRL issue 2175) gives a different gradient on the same data
    naive = lambda m, mb, n: (lambda l, s: (l / len(micro), s))(*_sft_loss_fn(m, mb, None))  # noqa: E731
    wrong, _ = _update(model, micro, naive, tokens)
    assert (wrong - full).abs().max() > 1e-4 * full.abs().max()


def test_reward_pairs_accumulate_like_one_batch(setup):
    tok, exs, model = setup
    from rlhf.reward.model import RewardModel

    backbone = model.transformer
    torch.manual_seed(0)
    rm = RewardModel(backbone, torch.nn.Linear(backbone.config.hidden_size, 1), tok, max_seq_len=128)
    seqs = [e["input_ids"] for e in exs]
    chosen, rejected = seqs[:4], seqs[4:]

    def loss_fn(m, mb, n):
        c, r = m(mb["input_ids"], mb["attention_mask"]).chunk(2)
        return bradley_terry_loss(c, r, 0.1, 0.01, n)

    pairs = lambda mb: mb["input_ids"].shape[0] // 2  # noqa: E731
    full, _ = _update(rm, [collate_pairs(chosen, rejected, tok.pad_token_id)], loss_fn, pairs)
    micro = [collate_pairs(chosen[i: i + 1], rejected[i: i + 1], tok.pad_token_id) for i in range(4)]
    accum, _ = _update(rm, micro, loss_fn, pairs)
    torch.testing.assert_close(accum, full, rtol=1e-4, atol=1e-7)
