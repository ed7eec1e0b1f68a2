import copy

import pytest
import torch

from rlhf.chat import encode_prompt, prompt_text, response_text
from rlhf.generation import RowSeededSampler, encode_prompts, generate, row_seed, truncate_after_eos
from rlhf.tokenizer import train_tokenizer
from rlhf.train import build_gpt2, length_order
from rlhf.train.toy import sft_rows


@pytest.fixture(scope="module")
def tok_model():
    texts = [prompt_text(r["prompt"]) + response_text(r["response"]) for r in sft_rows(40)]
    tok = train_tokenizer(texts, vocab_size=350, min_frequency=1)
    return tok, build_gpt2(tok, n_layer=1, n_head=2, n_embd=32, n_positions=64, seed=0)


def test_truncate_after_first_eos():
    eos, pad = 2, 0
    raw = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    ids, mask, ended = truncate_after_eos(raw, eos, pad)
    assert ids.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]  # EOS itself is an action
    assert ended.tolist() == [True, False, True]


def test_prompts_are_left_padded_chat_prefixes(tok_model):
    tok, _ = tok_model
    ids, mask = encode_prompts(tok, ["hi", "How do I water a fern?"])
    assert ids[0, -1] == ids[1, -1]  # both end with the same "\n\nAssistant:" tokens
    assert ids[1][mask[1].bool()].tolist() == encode_prompt(tok, "How do I water a fern?")
    assert mask[0, 0] == 0 and mask[:, -1].all()
    short, _ = encode_prompts(tok, ["How do I water a fern? " * 20], max_prompt_len=10)
    assert short.shape[1] == 10 and short[0, 0] == tok.bos_token_id


def test_generate_shapes_masks_and_seed(tok_model):
    tok, model = tok_model
    prompts = ["How do I water a fern?", "hi", "Where should I put a rose?"]
    a = generate(model, tok, prompts, max_new_tokens=8, temperature=1.0, seed=3, batch_size=2)
    b = generate(model, tok, prompts, max_new_tokens=8, temperature=1.0, seed=4, batch_size=2)
    assert not torch.equal(a.response_ids, b.response_ids)
    c = generate(model, tok, prompts, max_new_tokens=8, temperature=1.0, seed=3, batch_size=2)
    assert torch.equal(a.response_ids, c.response_ids) and a.texts == c.texts
    B, R = a.response_ids.shape
    assert B == 3 and R <= 8 and a.sequences.shape == (3, a.prompt_ids.shape[1] + R)
    m = a.response_mask
    assert (m[:, 1:] <= m[:, :-1]).all()  # a prefix of ones in every row
    assert (a.response_ids[m == 0] == tok.pad_token_id).all()
    for row, mask, ended, text in zip(a.response_ids, m, a.ended, a.texts):
        kept = row[mask.bool()].tolist()
        assert (kept[-1] == tok.eos_token_id) == bool(ended)
        assert tok.eos_token_id not in kept[:-1]
        assert text == tok.decode(kept[:-1] if ended else kept).strip()


def test_greedy_is_deterministic_without_seed(tok_model):
    tok, model = tok_model
    a = generate(model, tok, ["hi"], max_new_tokens=5, temperature=0)
    b = generate(model, tok, ["hi"], max_new_tokens=5, temperature=0)
    assert torch.equal(a.response_ids, b.response_ids)
    # greedy: every kept token is the argmax given the prefix
    ids = a.sequences[:, : a.prompt_ids.shape[1] + 1]
    logits = model(input_ids=a.sequences[:, :-1]).logits[0, a.prompt_ids.shape[1] - 1]
    assert int(logits.argmax()) == int(ids[0, -1])


def test_sampling_ignores_the_checkpoints_generation_config(tok_model, monkeypatch):
    """A checkpoint that ships repetition_penalty and no_repeat_ngram_size (and top_k) still samples
    from exactly softmax(logits / T): every sampling distribution equals the teacher-forced one."""
    from rlhf.logprobs import forward_logits

    tok, model = tok_model
    model.generation_config.repetition_penalty = 1.3
    model.generation_config.no_repeat_ngram_size = 1
    model.generation_config.top_k = 5
    drawn: list[torch.Tensor] = []
    multinomial = torch.multinomial

    def recording(probs, *args, **kwargs):
        drawn.append(probs.detach().clone())  # (B, V) the distribution of one step
        return multinomial(probs, *args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", recording)
    temperature = 0.7
    try:
        samples = generate(model, tok, ["hi", "How do I water a fern?", "tell me"], max_new_tokens=12,
                           temperature=temperature, seed=0, batch_size=8)
    finally:
        model.generation_config.repetition_penalty = None
        model.generation_config.no_repeat_ngram_size = None
        model.generation_config.top_k = None
    assert model.generation_config.top_k is None  # the model's own config is back in place
    P = samples.prompt_ids.shape[1]
    with torch.no_grad():
        logits = forward_logits(model, samples.sequences, samples.attention_mask, temperature)  # (B, P+R, V)
    # the sampler sees the prompts in order of length (one batch here)
    order = length_order(samples.prompt_mask.sum(dim=1).tolist())
    teacher = torch.softmax(logits[order, P - 1: -1], dim=-1)  # (B, R, V) in sampling order
    compared = 0
    for t, probs in enumerate(drawn):
        rows = samples.response_mask[order, t].bool()
        torch.testing.assert_close(probs[rows], teacher[rows, t], atol=1e-5, rtol=1e-4)
        compared += int(rows.sum())
    assert compared == int(samples.response_mask.sum()) > 3


def test_prompts_that_do_not_fit_the_context_are_refused(tok_model):
    tok, model = tok_model  # a 64-token context
    with pytest.raises(ValueError, match="evaluate.max_new_tokens=64 leaves no room"):
        generate(model, tok, ["hi"], max_new_tokens=64, budget_key="evaluate.max_new_tokens")
    with pytest.raises(ValueError, match=r"sft.sample_max_new_tokens=50 .* 1 of 2 prompts are longer"):
        generate(model, tok, ["hi", "How do I water a fern? " * 3], max_new_tokens=50,
                 budget_key="sft.sample_max_new_tokens")

    # max_prompt_len keeps the prompt's start token and its last tokens, so the long prompt fits
    long = "How do I water a fern? " * 3
    cut = generate(model, tok, ["hi", long], max_new_tokens=50, max_prompt_len=12, temperature=0)
    full = encode_prompt(tok, long)
    assert cut.prompt_ids[1][cut.prompt_mask[1].bool()].tolist() == full[:1] + full[-11:]
    with pytest.raises(ValueError, match="ppo.max_new_tokens=60"):
        generate(model, tok, [long], max_new_tokens=60, max_prompt_len=12, budget_key="ppo.max_new_tokens")


def test_length_ordered_batches_keep_each_prompt_with_its_own_response(tok_model):
    """Prompts are batched by length; each response must still be the one its own prompt gets
    alone (greedy decoding makes that exact)."""
    tok, model = tok_model
    prompts = ["How do I water a fern? " * 3, "hi", "Where should I put a rose?", "ok", "How tall is a fern?"]
    together = generate(model, tok, prompts, max_new_tokens=6, temperature=0, batch_size=2)
    for i, p in enumerate(prompts):
        alone = generate(model, tok, [p], max_new_tokens=6, temperature=0)
        assert together.texts[i] == alone.texts[0]
        assert together.prompt_ids[i][together.prompt_mask[i].bool()].tolist() == encode_prompt(tok, p)


def test_rows_without_shared_padding_give_the_same_logprobs(tok_model):
    from rlhf.logprobs import logprobs_from_logits, response_logits

    tok, model = tok_model
    prompts = ["How do I water a fern? " * 3, "hi", "Where should I put a rose?", "ok"]
    s = generate(model, tok, prompts, max_new_tokens=6, temperature=1.0, seed=0, batch_size=4)
    P = s.prompt_ids.shape[1]
    full = logprobs_from_logits(response_logits(model, s.sequences, s.attention_mask, P), s.response_ids)
    seqs, attn, mask, p = s.rows([1, 3])  # the two short prompts: most of the width is shared padding
    assert p < P and seqs.shape[1] == p + mask.shape[1] and mask.shape[1] <= s.response_ids.shape[1]
    part = logprobs_from_logits(response_logits(model, seqs, attn, p), seqs[:, p:])
    r = mask.shape[1]
    assert torch.equal(mask, s.response_mask[[1, 3], :r])
    torch.testing.assert_close(part * mask, full[[1, 3], :r] * s.response_mask[[1, 3], :r], atol=1e-5, rtol=1e-5)


def test_row_seeded_sample_does_not_depend_on_its_batch(tok_model):
    """With `row_seeds`, a prompt draws the same response alone, in a batch, or in another order:
    what lets PPO's processes sample shards of a batch and get the one-process rollout."""
    tok, model = tok_model
    prompts = [r["prompt"] for r in sft_rows(6, seed=2)]
    seeds = [row_seed(7, i) for i in range(len(prompts))]
    together = generate(model, tok, prompts, max_new_tokens=10, temperature=0.9, row_seeds=seeds)
    for i in (0, 3, 5):
        alone = generate(model, tok, [prompts[i]], max_new_tokens=10, temperature=0.9, row_seeds=[seeds[i]])
        assert alone.texts == [together.texts[i]]
    flipped = generate(model, tok, prompts[::-1], max_new_tokens=10, temperature=0.9, row_seeds=seeds[::-1])
    assert flipped.texts == together.texts[::-1]
    other = generate(model, tok, prompts, max_new_tokens=10, temperature=0.9, row_seeds=[row_seed(8, i) for i in range(6)])
    assert other.texts != together.texts  # the seed matters


def test_row_seeded_sampler_draws_from_the_tempered_softmax():
    """Gumbel-max over logits / T samples softmax(logits / T): the frequencies of 40,000 draws
    from one row's stream match the closed-form probabilities (4 sigma of a binomial)."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -float("inf")]])
    temperature = 0.8
    sampler = RowSeededSampler([row_seed(1, 0)], temperature, 1.0, torch.device("cpu"))
    n = 40_000
    draws = torch.stack([sampler(None, logits).argmax(dim=-1) for _ in range(n)]).flatten()
    freq = torch.bincount(draws, minlength=5).double() / n
    p = torch.softmax(logits[0].double() / temperature, dim=0)
    assert freq[4] == 0.0  # a forbidden token is never drawn
    assert torch.all((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1e-12), (freq, p)


@pytest.mark.parametrize("temperature,top_p,seeded_rows,eos_scale", [(0.0, 1.0, False, 3.0), (1.0, 1.0, False, 40.0),
                                                                     (0.7, 0.9, False, 40.0), (0.7, 1.0, True, 40.0)])
def test_decode_samples_what_transformers_generate_samples(tok_model, temperature, top_p, seeded_rows, eos_scale):
    """The project's decode loop and `model.generate` with the same settings and seed give the same
    tokens: greedy, tempered and top-p sampling from the global stream, and row-seeded sampling.
    Rows of different prompt lengths (left padding) and rows that end early are both covered: the
    EOS embedding (tied to its output row) is scaled up so that some responses end within the budget."""
    from rlhf.generation import (
        checkpoint_generation_config_hidden,
        decode,
        sampling_config,
        token_rule,
    )
    from transformers import LogitsProcessorList

    tok, model = tok_model
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.transformer.wte.weight[tok.eos_token_id] *= eos_scale
    ids, mask = encode_prompts(tok, ["hi", "How do I water a fern?", "tell me", "Where should I put a rose?"])
    seeds = [row_seed(5, i) for i in range(4)]
    ended, widths = 0, set()
    for seed in range(3):
        sampler = RowSeededSampler(seeds, temperature, top_p, torch.device("cpu")) if seeded_rows else None
        torch.manual_seed(seed)
        ours = decode(model, ids, mask, 20, token_rule(0.0 if seeded_rows else temperature, top_p, sampler),
                      tok.eos_token_id, tok.pad_token_id)
        cfg = sampling_config(tok, 20, 0.0 if seeded_rows else temperature, 1.0 if seeded_rows else top_p)
        extra = {"logits_processor": LogitsProcessorList(
            [RowSeededSampler(seeds, temperature, top_p, torch.device("cpu"))])} if seeded_rows else {}
        torch.manual_seed(seed)
        with torch.no_grad(), checkpoint_generation_config_hidden(model):
            theirs = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, **extra)
        assert torch.equal(ours, theirs[:, ids.shape[1]:]), (seed, ours, theirs[:, ids.shape[1]:])
        ended, widths = ended + int((ours == tok.eos_token_id).any(dim=1).sum()), widths | {ours.shape[1]}
    assert ended > 0 and min(widths) < 20  # some rows ended, and some batch stopped before the budget
