"""Teacher-forced log-probs: padding invariance, temperature scaling, response-only sums."""

import pytest
import torch

from rlhf.logprobs import (
    entropy_from_logits,
    forward_logits,
    logprobs_from_logits,
    sequence_logprobs,
    token_logprobs,
)


@pytest.fixture(scope="module")
def model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    return GPT2LMHeadModel(cfg).eval()


def test_left_padding_does_not_change_logprobs(model):
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    alone = token_logprobs(model, ids, torch.ones_like(ids))
    padded = torch.tensor([[0, 0, 5, 6, 7, 8, 9]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1]])
    torch.testing.assert_close(token_logprobs(model, padded, mask)[:, 2:], alone, atol=1e-5, rtol=1e-5)


def test_temperature_scales_logits(model):
    ids = torch.tensor([[3, 4, 5, 6]])
    mask = torch.ones_like(ids)
    raw = forward_logits(model, ids, mask)
    hot = forward_logits(model, ids, mask, temperature=0.5)
    torch.testing.assert_close(hot, raw / 0.5)
    expected = torch.log_softmax(raw[:, :-1] / 0.5, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(token_logprobs(model, ids, mask, temperature=0.5), expected)


def test_sequence_logprobs_sum_response_tokens_only(model):
    ids = torch.tensor([[1, 5, 6, 7, 8, 2, 0], [1, 9, 10, 11, 2, 0, 0]])
    attn = (torch.arange(7)[None] < torch.tensor([6, 5])[:, None]).long()
    # prompt = first 3 tokens of row 0, first 2 of row 1; response = the rest up to EOS
    resp = torch.tensor([[0, 0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 0, 0]])
    per_token = token_logprobs(model, ids, attn)  # (2, 6), column t scores token t+1
    expected = torch.stack([per_token[0, 2:5].sum(), per_token[1, 1:4].sum()])
    torch.testing.assert_close(sequence_logprobs(model, ids, attn, resp), expected)


def test_entropy_closed_form():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    assert entropy_from_logits(logits).item() == pytest.approx(1.5 * torch.log(torch.tensor(2.0)).item())
    labels = torch.tensor([[1]])
    assert logprobs_from_logits(logits, labels).item() == pytest.approx(torch.log(torch.tensor(0.25)).item())


def test_logprobs_and_entropy_from_one_log_softmax():
    """Both quantities equal their one-at-a-time versions; without `entropy_grad` the entropy
    carries no graph while the log-probs keep theirs."""
    from rlhf.logprobs import logprobs_and_entropy

    logits = torch.randn(2, 3, 7, requires_grad=True)
    labels = torch.randint(0, 7, (2, 3))
    for grad in (True, False):
        picked, entropy = logprobs_and_entropy(logits, labels, entropy_grad=grad)
        torch.testing.assert_close(picked, logprobs_from_logits(logits, labels))
        torch.testing.assert_close(entropy, entropy_from_logits(logits))
        assert picked.requires_grad and entropy.requires_grad == grad


def test_sequence_logprobs_equal_the_sum_of_cut_logits(model):
    """`sequence_logprobs` sums exactly what cutting the logits to the predicting positions gives."""
    torch.manual_seed(2)
    ids = torch.randint(1, 50, (2, 8))
    attn = torch.ones_like(ids)
    resp = torch.zeros_like(ids)
    resp[0, 3:] = 1
    resp[1, 5:] = 1
    logits = forward_logits(model, ids, attn)[:, 2:7]  # positions 2..6 predict tokens 3..7
    want = (logprobs_from_logits(logits, ids[:, 3:]) * resp[:, 3:].float()).sum(dim=1)
    torch.testing.assert_close(sequence_logprobs(model, ids, attn, resp), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("start, stop", [(0, 8), (3, 8), (2, 7), (0, 7), (5, 6)])
def test_a_range_of_positions_gives_those_logits_and_their_gradients(model, start, stop):
    """Positions [start, stop) come back contiguous with the logits and gradients of the full pass
    cut to them, whether the range ends at the last position (a view) or before it (indices)."""
    torch.manual_seed(3)
    ids, attn = torch.randint(1, 50, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    weights = torch.randn(2, stop - start, model.config.vocab_size)

    def grads(logits):
        model.zero_grad()
        (logits * weights).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    part = forward_logits(model, ids, attn, 0.7, start, stop)
    assert part.shape == (2, stop - start, model.config.vocab_size) and part.is_contiguous()
    full = forward_logits(model, ids, attn, 0.7)[:, start:stop]
    torch.testing.assert_close(part, full, rtol=0, atol=1e-5)
    for mine, want in zip(grads(part), grads(forward_logits(model, ids, attn, 0.7)[:, start:stop])):
        torch.testing.assert_close(mine, want, rtol=1e-5, atol=1e-6)
