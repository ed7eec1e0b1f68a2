import math

import pytest
import torch

from rlhf.chat import encode_prompt, encode_response, response_text
from rlhf.losses.sft import sft_loss
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
    p, r = encode_prompt(tok, "How do I water a fern?"), encode_response(tok, "Water it weekly.")
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


def test_packed_rows_score_each_example_as_if_alone(tok):
    model = build_gpt2(tok, n_layer=2, n_head=2, n_embd=32, n_positions=128, seed=0)
    exs = [encode_sft_example(tok, r["prompt"], r["response"], 64) for r in sft_rows(6)]
    packed = collate_sft(pack_examples(exs, 128), tok.pad_token_id)
    assert packed["attention_mask"].dim() == 4
    logits = model(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"],
                   position_ids=packed["position_ids"]).logits
    loss_packed = sft_loss(logits, packed["input_ids"], packed["loss_mask"])[0]
    plain = collate_sft(exs, tok.pad_token_id)
    logits = model(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"]).logits
    loss_plain = sft_loss(logits, plain["input_ids"], plain["loss_mask"])[0]
    assert loss_packed.item() == pytest.approx(loss_plain.item(), rel=1e-5)
