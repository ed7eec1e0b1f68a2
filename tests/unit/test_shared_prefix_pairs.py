"""A preference pair scored in one row that holds its common prefix once (`collate_shared_pairs`)
gets the rewards and gradients of the two sequences scored apart (`collate_pairs`)."""

import pytest
import torch

from rlhf.reward.model import RewardModel
from rlhf.train import collate_pairs, collate_preference_batch, collate_shared_pairs, pairs_in
from rlhf.train.batching import pair_width
from rlhf.train.toy import pref_rows
from tests.unit.test_reward_model import encoder_dir, gpt2_dir, llama_dir, tok  # noqa: F401 (fixtures)

PAD = 0


def test_layout_holds_the_prefix_once_and_hides_the_chosen_tail_from_the_rejected():
    batch = collate_shared_pairs([[1, 2, 3, 4]], [[1, 2, 5, 6, 7]], PAD)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2, 3, 4]]  # the rejected tail continues the prefix
    assert batch["score_index"].tolist() == [[3, 6]]
    allowed = batch["attention_mask"][0, 0].int().tolist()
    assert allowed[3] == [1, 1, 1, 1, 0, 0, 0]  # chosen's last token: prefix and chosen tail
    assert allowed[4] == [1, 1, 0, 0, 1, 0, 0]  # rejected's first own token: prefix and itself
    assert allowed[6] == [1, 1, 0, 0, 1, 1, 1]


def test_identical_or_nested_sequences_keep_a_token_of_their_own_and_padding_sees_no_real_token():
    batch = collate_shared_pairs([[1, 2, 3], [1, 2, 3, 4]], [[1, 2, 3], [1, 2]], PAD)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 3, PAD], [1, 2, 3, 4, 2]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 2, 0], [0, 1, 2, 3, 1]]
    assert batch["score_index"].tolist() == [[2, 3], [3, 4]]
    assert batch["attention_mask"][0, 0, 4].int().tolist() == [0, 0, 0, 0, 1]  # the pad column: itself only


def test_pair_width_is_the_width_each_layout_gives_the_pair():
    c, r = [1, 2, 3, 4], [1, 2, 5, 6, 7]
    assert pair_width(c, r, share=True) == collate_shared_pairs([c], [r], PAD)["input_ids"].shape[1] == 7
    assert pair_width(c, r, share=False) == collate_pairs([c], [r], PAD)["input_ids"].shape[1] == 5


def pairs_of(rm, n=4):
    rows = pref_rows(n)
    return ([rm.encode(r["prompt"], r["chosen"]) for r in rows], [rm.encode(r["prompt"], r["rejected"]) for r in rows])


def shared_rewards(rm, batch):
    return rm(batch["input_ids"], batch["attention_mask"], position_ids=batch["position_ids"],
              score_index=batch["score_index"])  # (B, 2)


@pytest.mark.parametrize("backbone,impl", [("gpt2_dir", "eager"), ("gpt2_dir", "sdpa"), ("llama_dir", "sdpa")])
def test_shared_rows_score_and_train_like_separate_rows(backbone, impl, tok, request):  # noqa: F811
    own = backbone == "llama_dir"  # ChatML with pad == eos: the pooled token is the one before EOS
    rm = RewardModel.from_backbone(request.getfixturevalue(backbone), tokenizer=None if own else tok, seed=0)
    rm.backbone.config._attn_implementation = impl
    assert rm.shares_prefixes()
    chosen, rejected = pairs_of(rm)
    shared = collate_shared_pairs(chosen, rejected, rm.tokenizer.pad_token_id)
    plain = collate_pairs(chosen, rejected, rm.tokenizer.pad_token_id)
    assert shared["input_ids"].numel() < 0.8 * plain["input_ids"].numel()  # the prompts are held once
    assert pairs_in(shared) == pairs_in(plain) == len(chosen)

    def grads(loss):
        rm.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in rm.parameters()]

    got = shared_rewards(rm, shared)  # (B, 2)
    want = rm(plain["input_ids"], plain["attention_mask"]).view(2, -1).T  # (B, 2)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    margin = lambda r: torch.nn.functional.logsigmoid(r[:, 0] - r[:, 1]).mean()  # noqa: E731
    for a, b in zip(grads(margin(got)), grads(margin(want))):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_encoders_and_pairs_without_a_common_prefix_use_separate_rows(encoder_dir, gpt2_dir, tok):  # noqa: F811
    assert not RewardModel.from_backbone(encoder_dir, seed=0).shares_prefixes()  # bidirectional, pooled at [CLS]
    rm = RewardModel.from_backbone(gpt2_dir, tokenizer=tok, seed=0)
    chosen, rejected = pairs_of(rm, 2)
    assert "score_index" in collate_preference_batch(chosen, rejected, PAD, share=True)
    assert "score_index" not in collate_preference_batch(chosen, rejected, PAD, share=False)
    unrelated = [[9, *s[1:]] for s in rejected]  # differ from the first token on
    assert "score_index" not in collate_preference_batch(chosen, unrelated, PAD, share=True)


@pytest.mark.parametrize("family,impl", [("gpt2", "eager"), ("gpt2", "sdpa"), ("llama", "sdpa")])
def test_shared_rows_give_the_dpo_sequence_logprobs_and_gradients_of_separate_rows(family, impl, tok):  # noqa: F811
    """Responses that begin alike put response tokens in the shared prefix: each sequence still
    sums them, as it does alone."""
    from rlhf.logprobs import pair_sequence_logprobs
    from rlhf.stages.dpo import collate_pairs, encode_pairs
    from tests.unit.test_sft_masking import tiny_model

    model = tiny_model(tok, family, impl).train()
    rows = pref_rows(4)
    rows[1] = {**rows[1], "rejected": rows[1]["chosen"] + " Also water it."}  # chosen is a prefix of rejected
    pairs = encode_pairs(tok, rows, 64)
    shared, plain = collate_pairs(pairs, tok.pad_token_id, share=True), collate_pairs(pairs, tok.pad_token_id)
    assert "targets" in shared and "targets" not in plain
    assert shared["input_ids"].numel() < 0.8 * plain["input_ids"].numel()
    torch.testing.assert_close(shared["lengths"], plain["lengths"])

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    got, want = pair_sequence_logprobs(model, shared), pair_sequence_logprobs(model, plain)  # (2B,)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert want.abs().min() > 1  # sums over whole responses, not a vacuous 0
    margin = lambda lp: torch.nn.functional.logsigmoid(0.1 * (lp[:4] - lp[4:])).mean()  # noqa: E731
    for a, b in zip(grads(margin(got)), grads(margin(want))):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_a_sliding_window_model_shares_rows_only_when_every_sequence_fits_its_window():
    """The 4-D mask of a shared row replaces a model's sliding window, so Mistral-like models share
    rows only for sequences no longer than the window (the stage's `max_seq_len`); a window that is
    switched off (Qwen2's `use_sliding_window: false`) or absent (Llama) does not stop sharing."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from rlhf.train.batching import model_attention_mask, shares_prefixes, sliding_window

    small = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, attn_implementation="sdpa")
    mistral = MistralForCausalLM(MistralConfig(sliding_window=32, **small)).eval()
    assert sliding_window(mistral) == 32
    # why: with a 4-D mask a token beyond the window sees keys the model's own mask would hide
    ids = torch.randint(0, 64, (1, 48), generator=torch.Generator().manual_seed(0))
    own = mistral(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    four_d = model_attention_mask(mistral, torch.ones(48, 48, dtype=torch.bool).tril()[None, None])
    given = mistral(input_ids=ids, attention_mask=four_d, position_ids=torch.arange(48)[None]).logits
    torch.testing.assert_close(given[:, :32], own[:, :32])
    assert not torch.allclose(given[:, 32:], own[:, 32:], atol=1e-4)
    assert shares_prefixes(mistral, 32) and not shares_prefixes(mistral, 33) and not shares_prefixes(mistral)
    qwen_off = Qwen2ForCausalLM(Qwen2Config(sliding_window=32, use_sliding_window=False, **small))
    assert sliding_window(qwen_off) is None and shares_prefixes(qwen_off, 4096)
    llama = LlamaForCausalLM(LlamaConfig(**small))
    assert sliding_window(llama) is None and shares_prefixes(llama)
