import math

import pytest
import torch

from rlhf.chat import encode_prompt, encode_response, response_text
from rlhf.losses.sft import sft_loss, shifted_token_logprobs
from rlhf.stages.sft import evaluate_loss, loss_tokens, micro_batch_loss
from rlhf.train.batching import model_attention_mask
from rlhf.tokenizer import train_tokenizer
from rlhf.train import build_gpt2, collate_sft, encode_sft_example, pack_examples
from rlhf.train.toy import sft_rows


@pytest.fixture(scope="module")
def tok():
    from rlhf.chat import prompt_text

    texts = [prompt_text(r["prompt"]) + response_text(r["response"]) for r in sft_rows(40)]
    return train_tokenizer(texts, vocab_size=350, min_frequency=1)


def test_uniform_logits_give_log_vocab():
    logits = torch.zeros(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    loss, m = sft_loss(logits, ids, mask)
    assert loss.item() == pytest.approx(math.log(7), rel=1e-6)
    assert m["loss/sft"].item() == pytest.approx(math.log(7), rel=1e-6)


def test_shifted_token_logprobs_match_log_softmax_and_its_gradient():
    """The contiguous cross-entropy path gives log_softmax(logits[:, t])[x_{t+1}] and the same
    gradient as that plain formula; the last position, which predicts nothing, gets none."""
    torch.manual_seed(0)
    logits = (3 * torch.randn(3, 9, 50)).requires_grad_()
    ids = torch.randint(0, 50, (3, 9))
    weights = torch.randn(3, 8)
    fast = shifted_token_logprobs(logits, ids)
    plain = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert fast.shape == (3, 8)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
    (g_fast,) = torch.autograd.grad((fast * weights).sum(), logits)
    (g_plain,) = torch.autograd.grad((plain * weights).sum(), logits)
    torch.testing.assert_close(g_fast, g_plain, rtol=0, atol=1e-5)
    assert g_fast[:, -1].abs().max() == 0
    assert shifted_token_logprobs(logits[:, :1], ids[:, :1]).shape == (3, 0)  # one position: nothing to score


def test_loss_ignores_ids_at_masked_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11, requires_grad=True)
    ids = torch.randint(0, 11, (2, 6))
    mask = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]])  # prompt ... response ... pad
    loss, _ = sft_loss(logits, ids, mask)
    other = torch.where(mask.bool(), ids, torch.randint(0, 11, ids.shape))  # new labels where masked
    assert not torch.equal(other, ids)
    assert sft_loss(logits, other, mask)[0].item() == pytest.approx(loss.item(), abs=0)
    # and the logits that predict masked tokens get no gradient
    loss.backward()
    predicts_masked = mask[:, 1:] == 0  # logits[:, t] predict token t+1
    assert logits.grad[:, :-1][predicts_masked].abs().max() == 0
    assert logits.grad[:, -1].abs().max() == 0  # the last position predicts nothing


def test_example_mask_covers_exactly_response_and_eos(tok):
    ex = encode_sft_example(tok, "How do I water a fern?", "Water it weekly.", max_len=128)
    p, r = encode_prompt(tok, "How do I water a fern?"), encode_response(tok, "How do I water a fern?", "Water it weekly.")
    assert ex["input_ids"] == p + r
    assert ex["loss_mask"] == [0] * len(p) + [1] * len(r)
    targets = [i for i, m in zip(ex["input_ids"], ex["loss_mask"]) if m]
    assert tok.decode(targets) == response_text("Water it weekly.") + tok.eos_token


def test_truncation_keeps_bos_and_response_start(tok):
    ex = encode_sft_example(tok, "How do I water a fern? " * 10, "Water it weekly. " * 10, max_len=32)
    assert len(ex["input_ids"]) == 32 and ex["input_ids"][0] == tok.bos_token_id
    assert sum(ex["loss_mask"]) >= 16  # the response keeps at least half the window


def test_padding_and_prompt_tokens_do_not_change_model_loss(tok):
    model = build_gpt2(tok, n_layer=1, n_head=2, n_embd=32, n_positions=64, seed=0)
    exs = [encode_sft_example(tok, r["prompt"], r["response"], 64) for r in sft_rows(3)]
    exs[0] = {k: v[:-3] for k, v in exs[0].items()}  # unequal lengths -> padding
    batch = collate_sft(exs, tok.pad_token_id)
    loss = sft_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                    batch["input_ids"], batch["loss_mask"])[0]
    repadded = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 7)  # other pad ids
    loss2 = sft_loss(model(input_ids=repadded, attention_mask=batch["attention_mask"]).logits,
                     repadded, batch["loss_mask"])[0]
    assert loss2.item() == pytest.approx(loss.item(), abs=1e-6)


def test_packing_keeps_whole_examples_in_order(tok):
    exs = [encode_sft_example(tok, r["prompt"], r["response"], 64) for r in sft_rows(10)]
    rows = pack_examples(exs, 128)
    assert all(len(r["input_ids"]) <= 128 for r in rows) and len(rows) < len(exs)
    assert sum((r["input_ids"] for r in rows), []) == sum((e["input_ids"] for e in exs), [])
    assert sum((r["loss_mask"] for r in rows), []) == sum((e["loss_mask"] for e in exs), [])
    assert all(r["segment_ids"][0] == 0 and r["segment_ids"] == sorted(r["segment_ids"]) for r in rows)


# Both attention implementations Hugging Face decoders offer for a 4-D mask, on two families:
# GPT-2 (learned positions) and Llama (rotary positions, grouped-query attention).
MODELS = [(family, impl) for family in ("gpt2", "llama") for impl in ("eager", "sdpa")]


def tiny_model(tok, family: str, impl: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if family == "gpt2":
        config = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation=impl)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             attn_implementation=impl)
        model = LlamaForCausalLM(config)
    assert model.config._attn_implementation == impl
    return model.eval()


def loss_and_logits(model, batch, num_tokens):
    """`micro_batch_loss` as training calls it, and the model's logits at every position (b, T, V)
    for the same inputs (training asks only for those from the first target on)."""
    loss, _ = micro_batch_loss(model, batch, num_tokens)
    logits = model(input_ids=batch["input_ids"], attention_mask=model_attention_mask(model, batch["attention_mask"]),
                   position_ids=batch.get("position_ids")).logits
    return loss, logits.detach()


def segments(row):
    """[(start, end)] of each example of a packed row."""
    ids, bounds = row["segment_ids"], []
    for i, s in enumerate(ids):
        if i == 0 or s != ids[i - 1]:
            bounds.append([i, i + 1])
        else:
            bounds[-1][1] = i + 1
    return [tuple(b) for b in bounds]


@pytest.mark.parametrize("family,impl", MODELS)
def test_packed_rows_score_each_example_as_if_alone(tok, family, impl):
    model = tiny_model(tok, family, impl)
    exs = [encode_sft_example(tok, r["prompt"], r["response"], 64) for r in sft_rows(6)]
    rows = pack_examples(exs, 128)
    packed = collate_sft(rows, tok.pad_token_id)
    assert packed["attention_mask"].dim() == 4 and len(rows) < len(exs)
    n = float(loss_tokens(packed))
    with torch.no_grad():
        loss_packed, logits = loss_and_logits(model, packed, n)
        k = 0
        for r, row in enumerate(rows):
            for start, end in segments(row):
                alone = collate_sft([exs[k]], tok.pad_token_id)
                loss_alone, logits_alone = loss_and_logits(model, alone, float(loss_tokens(alone)))
                assert end - start == len(exs[k]["input_ids"])
                torch.testing.assert_close(logits[r, start:end], logits_alone[0], atol=1e-4, rtol=1e-4)
                # the example's loss inside the packed row equals its loss alone
                one = {key: v[r: r + 1, start:end] for key, v in packed.items() if key != "attention_mask"}
                one["attention_mask"] = packed["attention_mask"][r: r + 1, :, start:end, start:end]
                assert loss_and_logits(model, one, float(loss_tokens(one)))[0].item() == pytest.approx(
                    loss_alone.item(), rel=1e-5)
                k += 1
        plain = collate_sft(exs, tok.pad_token_id)
        loss_plain, _ = loss_and_logits(model, plain, n)
    assert k == len(exs)
    assert loss_packed.item() == pytest.approx(loss_plain.item(), rel=1e-5)


@pytest.mark.parametrize("family,impl", MODELS)
def test_a_later_token_never_changes_an_earlier_logit(tok, family, impl):
    model = tiny_model(tok, family, impl)
    exs = [encode_sft_example(tok, r["prompt"], r["response"], 64) for r in sft_rows(3)]
    (row,) = pack_examples(exs, 192)
    packed = collate_sft([row], tok.pad_token_id)
    (first, second, _) = segments(row)
    with torch.no_grad():
        _, logits = loss_and_logits(model, packed, 1.0)
        for t in (first[1] - 1, second[0] + 3, second[1] - 1):  # inside the first example, then the second
            changed = dict(packed, input_ids=packed["input_ids"].clone())
            changed["input_ids"][0, t] = (changed["input_ids"][0, t] + 1) % len(tok)
            _, after = loss_and_logits(model, changed, 1.0)
            torch.testing.assert_close(after[0, :t], logits[0, :t], atol=1e-5, rtol=1e-5)  # causality
            assert not torch.allclose(after[0, t], logits[0, t])  # the change does reach its own position
            end = next(e for s, e in (first, second) if s <= t < e)
            torch.testing.assert_close(after[0, end:], logits[0, end:], atol=1e-5, rtol=1e-5)  # later examples


@pytest.mark.parametrize("family,impl", MODELS)
def test_evaluate_loss_on_padded_examples_is_the_per_token_mean(tok, family, impl):
    from rlhf.train import make_accelerator

    model = tiny_model(tok, family, impl)
    exs = [encode_sft_example(tok, r["prompt"], r["response"], 64) for r in sft_rows(5)]
    exs[0] = {k: v[:-3] for k, v in exs[0].items()}  # unequal lengths -> padding
    got = evaluate_loss(model, exs, tok.pad_token_id, 5, make_accelerator("no"))
    with torch.no_grad():
        sums = [loss_and_logits(model, collate_sft([e], tok.pad_token_id), 1.0)[0].item() for e in exs]
    assert got == pytest.approx(sum(sums) / sum(sum(e["loss_mask"][1:]) for e in exs), rel=1e-5)


def test_a_packed_mask_reaches_the_model_as_additive_offsets(tok):
    allowed = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)[None, None]  # (1, 1, 3, 3)
    model = tiny_model(tok, "gpt2", "eager")
    got = model_attention_mask(model, allowed)
    low = torch.finfo(torch.float32).min
    assert got.dtype == torch.float32 and torch.equal(got[0, 0], torch.tensor(
        [[0.0, low, low], [0.0, 0.0, low], [low, low, 0.0]]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model_attention_mask(model, allowed).dtype == torch.bfloat16  # the dtype scores are computed in
    padding = torch.ones(2, 3, dtype=torch.long)
    assert model_attention_mask(model, padding) is padding  # a (B, T) mask is the model's to expand
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(AssertionError, match="eager or sdpa"):
        model_attention_mask(model, allowed)


def test_micro_batch_loss_on_kept_logits_matches_the_full_logits(tok):
    """The LM head runs on positions from the batch's first target on; loss and gradients are those
    of the full (b, T, V) logits."""
    from rlhf.losses.sft import first_scored_position

    model = build_gpt2(tok, n_layer=1, n_head=2, n_embd=32, n_positions=64, seed=0)
    exs = [encode_sft_example(tok, r["prompt"], r["response"], 64) for r in sft_rows(3)]
    batch = collate_sft(exs, tok.pad_token_id)
    s = first_scored_position(batch["loss_mask"])
    assert s > 0 and batch["loss_mask"][:, : s + 1].sum() == 0 and batch["loss_mask"][:, s + 1].any()

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    n = loss_tokens(batch)
    kept = micro_batch_loss(model, batch, n)[0]
    full = sft_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                    batch["input_ids"], batch["loss_mask"], n)[0]
    assert kept.item() == pytest.approx(full.item(), rel=1e-6)
    for a, b in zip(grads(kept), grads(full)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # and a held-out evaluation reads the same positions
    with torch.no_grad():
        assert evaluate_loss(model, exs, tok.pad_token_id, 2, _Single()) == pytest.approx(full.item(), rel=1e-5)


class _Single:
    """The accelerator attributes `evaluate_loss` reads, for one CPU process."""

    process_index, num_processes, device = 0, 1, torch.device("cpu")

    @staticmethod
    def autocast():
        import contextlib

        return contextlib.nullcontext()
