import math

import pytest
import torch

from rlhf.chat import prompt_text, response_text
from rlhf.reward.model import RewardModel
from rlhf.tokenizer import train_tokenizer
from rlhf.train import build_gpt2
from rlhf.train.toy import sft_rows


@pytest.fixture(scope="module")
def tok():
    texts = [prompt_text(r["prompt"]) + response_text(r["response"]) for r in sft_rows(40)]
    return train_tokenizer(texts, vocab_size=350, min_frequency=1)


@pytest.fixture(scope="module")
def gpt2_dir(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    build_gpt2(tok, n_layer=2, n_head=2, n_embd=32, n_positions=64, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tok, tmp_path_factory):
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("bert")
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)  # no tokenizer here: the project's one is passed in
    return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tests.chatml import save_tiny_chat_llama

    return save_tiny_chat_llama(tmp_path_factory.mktemp("llama"))  # ChatML, pad == eos


@pytest.mark.parametrize("backbone", ["gpt2_dir", "llama_dir"])
def test_padded_batch_scores_like_unpadded_sequences(backbone, tok, request):
    own = backbone == "llama_dir"  # the Llama scores with its own tokenizer and chat template
    rm = RewardModel.from_backbone(request.getfixturevalue(backbone), tokenizer=None if own else tok, seed=0)
    tok = rm.tokenizer
    seqs = [rm.encode(r["prompt"], r["response"]) for r in sft_rows(3)]
    seqs[1] = seqs[1][:-5]
    assert len({len(s) for s in seqs}) > 1
    alone = torch.cat([rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in seqs])
    from rlhf.train import pad

    for side in ("right", "left"):
        ids = pad(seqs, tok.pad_token_id, side)
        mask = pad([[1] * len(s) for s in seqs], 0, side)
        torch.testing.assert_close(rm(ids, mask), alone, rtol=1e-4, atol=1e-5)


def test_head_init_and_dropout_off(gpt2_dir, tok):
    rm = RewardModel.from_backbone(gpt2_dir, tokenizer=tok, seed=1)
    assert rm.head.bias is None  # a decoder's `score` head has no bias
    std = rm.head.weight.std().item()
    assert std == pytest.approx(1 / math.sqrt(32 + 1), rel=0.35)  # 32 samples of N(0, 1/33)
    assert all(m.p == 0 for m in rm.modules() if isinstance(m, torch.nn.Dropout))
    assert rm.backbone.config.resid_pdrop == 0 and rm.backbone.config.attn_pdrop == 0


def test_save_load_roundtrip_score_and_compare(gpt2_dir, tok, tmp_path):
    rm = RewardModel.from_backbone(gpt2_dir, tokenizer=tok, seed=2)
    rm.norm = {"mean": 0.25, "std": 2.0}
    rm.save_pretrained(tmp_path)
    loaded = RewardModel.from_pretrained(tmp_path)
    texts = [prompt_text(r["prompt"]) + response_text(r["response"]) for r in sft_rows(4)]
    assert loaded.score(texts) == pytest.approx(rm.score(texts), abs=1e-6)
    raw = rm.raw_scores([rm.encode(r["prompt"], r["response"]) for r in sft_rows(4)])
    assert loaded.score(texts) == pytest.approx(((raw - 0.25) / 2.0).tolist(), abs=1e-5)
    assert loaded.score_pairs([r["prompt"] for r in sft_rows(4)], [r["response"] for r in sft_rows(4)]) == \
        pytest.approx(loaded.score(texts), abs=1e-6)
    out = loaded.compare(texts[0], texts[1])
    assert set(out) == {"preference", "confidence", "score_a", "score_b", "difference"}
    assert out["difference"] == pytest.approx(out["score_a"] - out["score_b"])
    assert out["preference"] == ("a" if out["difference"] >= 0 else "b")
    expected = 1 / (1 + math.exp(-abs(raw[0].item() - raw[1].item())))
    assert out["confidence"] == pytest.approx(expected, abs=1e-5) and out["confidence"] >= 0.5


# ---------- an encoder with its own tokenizer ([CLS]/[SEP], no EOS) ----------
@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from tests.encoders import save_tiny_bert, train_wordpiece

    texts = [prompt_text(r["prompt"]) + response_text(r["response"]) for r in sft_rows(40)]
    wp = train_wordpiece(texts, vocab_size=200)
    return save_tiny_bert(tmp_path_factory.mktemp("encoder"), len(wp), wp, seed=0)


def test_encoder_tokenizer_loads_for_the_reward_model_only(encoder_dir):
    from rlhf.train.models import load_reward_tokenizer, load_tokenizer

    tok = load_reward_tokenizer(encoder_dir)
    assert tok.eos_token is None and tok.cls_token == "[CLS]" and tok.pad_token == "[PAD]"
    with pytest.raises(ValueError, match="no eos token.*reward model"):
        load_tokenizer(encoder_dir)  # a policy still needs EOS


def test_encoder_uses_its_own_tokenizer_and_pools_at_cls(encoder_dir):
    rm = RewardModel.from_backbone(encoder_dir, seed=0)
    tok = rm.tokenizer
    assert tok.cls_token_id is not None and tok.eos_token is None and len(tok) == rm.backbone.config.vocab_size
    row = sft_rows(1)[0]
    ids = rm.encode(row["prompt"], row["response"])
    expected = tok.encode(prompt_text(row["prompt"]) + response_text(row["response"]), add_special_tokens=True)
    assert ids == expected  # the tokenizer's own [CLS] ... [SEP] around the chat text
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    # the score is the head on the encoder's pooler at [CLS] (column 0), whatever follows it
    x = torch.tensor([ids])
    hidden = rm.backbone(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state  # (1, T, H)
    pooled = torch.tanh(rm.backbone.pooler.dense(hidden[:, 0]))
    torch.testing.assert_close(rm(x, torch.ones_like(x)), rm.head(pooled).squeeze(-1), rtol=1e-5, atol=1e-6)


def test_encoder_padded_batch_scores_like_unpadded_sequences(encoder_dir):
    from rlhf.train import pad

    rm = RewardModel.from_backbone(encoder_dir, seed=0)
    seqs = [rm.encode(r["prompt"], r["response"]) for r in sft_rows(3)]
    seqs[1] = seqs[1][:-5]
    assert len({len(s) for s in seqs}) > 1
    alone = torch.cat([rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in seqs])
    for side in ("right", "left"):
        ids = pad(seqs, rm.tokenizer.pad_token_id, side)
        mask = pad([[1] * len(s) for s in seqs], 0, side)
        torch.testing.assert_close(rm(ids, mask), alone, rtol=1e-4, atol=1e-5)


def test_encoder_truncation_drops_prompt_tokens_and_keeps_cls(encoder_dir):
    rm = RewardModel.from_backbone(encoder_dir, seed=0, max_seq_len=16)
    tok = rm.tokenizer
    prompt, response = "water " * 40, "Water the fern once a week."
    ids = rm.encode(prompt, response)
    body = tok.encode(response_text(response), add_special_tokens=False)
    assert len(ids) == 16 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[-1 - len(body): -1] == body  # the whole response is kept, the prompt is cut


def test_encoder_save_load_records_pooling_and_scores_the_same(encoder_dir, tmp_path):
    import json

    rm = RewardModel.from_backbone(encoder_dir, seed=3)
    rm.norm = {"mean": 0.5, "std": 3.0}
    rm.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "reward_config.json").read_text(encoding="utf-8"))
    assert saved["pooling"] == "cls" and saved["tokenizer"] == "backbone"
    loaded = RewardModel.from_pretrained(tmp_path)
    assert loaded.pooling == "cls" and loaded.tokenizer.get_vocab() == rm.tokenizer.get_vocab()
    prompts, responses = [r["prompt"] for r in sft_rows(4)], [r["response"] for r in sft_rows(4)]
    assert loaded.score_pairs(prompts, responses) == pytest.approx(rm.score_pairs(prompts, responses), abs=1e-6)


def test_tokenizer_larger_than_the_embedding_matrix_is_refused(tok, tmp_path):
    from tests.encoders import save_tiny_bert

    small = save_tiny_bert(tmp_path / "small", vocab_size=len(tok) - 50)
    with pytest.raises(ValueError, match=rf"{len(tok)} tokens.*{len(tok) - 50} rows"):
        RewardModel.from_backbone(small, tokenizer=tok)


def test_causal_backbone_pools_the_last_real_token(gpt2_dir, tok):
    from rlhf.train import pad

    rm = RewardModel.from_backbone(gpt2_dir, tokenizer=tok, seed=0)
    seqs = [rm.encode(r["prompt"], r["response"]) for r in sft_rows(2)]
    seqs[1] = seqs[1][:-3] + [tok.eos_token_id]
    assert all(s[-1] == tok.eos_token_id for s in seqs)
    ids, mask = pad(seqs, tok.pad_token_id), pad([[1] * len(s) for s in seqs], 0)  # right padded
    hidden = rm.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # (2, T, H)
    last = torch.tensor([len(s) - 1 for s in seqs])
    expected = rm.head(hidden[torch.arange(2), last]).squeeze(-1)
    torch.testing.assert_close(rm(ids, mask), expected, rtol=1e-5, atol=1e-6)


def test_pad_equal_to_eos_pools_the_last_token_before_padding(llama_dir):
    """With pad == eos (SmolLM2, Llama) the head reads the response's last token, as the
    architecture's own sequence classifier does: the EOS is indistinguishable from padding."""
    rm = RewardModel.from_backbone(llama_dir, seed=0)
    tok = rm.tokenizer
    assert tok.pad_token_id == tok.eos_token_id
    ids = torch.tensor([rm.encode("How do I water a fern?", "Weekly.")])  # ends with EOS
    assert ids[0, -1] == tok.eos_token_id
    assert rm.pooled_index(ids, torch.ones_like(ids)).item() == ids.shape[1] - 2


@pytest.mark.parametrize("backbone", ["gpt2_dir", "llama_dir", "encoder_dir"])
def test_saved_reward_model_is_a_standard_sequence_classifier(backbone, tok, request, tmp_path):
    """Plain `AutoModelForSequenceClassification` loads the saved directory, head included, and
    scores a right-padded batch exactly as the reward model does (raw units; the normalisation is
    in its config)."""
    from transformers import AutoModelForSequenceClassification

    from rlhf.train import pad

    project = backbone == "gpt2_dir"
    rm = RewardModel.from_backbone(request.getfixturevalue(backbone), tokenizer=tok if project else None, seed=2)
    with torch.no_grad():
        rm.head.weight.normal_()  # a trained-looking head, far from its small init
    rm.norm = {"mean": 0.25, "std": 2.0}
    rm.save_pretrained(tmp_path)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path, local_files_only=True).eval()
    assert plain.config.num_labels == 1 and plain.config.reward_norm == {"mean": 0.25, "std": 2.0}
    seqs = [rm.encode(r["prompt"], r["response"]) for r in sft_rows(3)]
    ids, mask = pad(seqs, rm.tokenizer.pad_token_id), pad([[1] * len(s) for s in seqs], 0)
    with torch.no_grad():
        expected = rm(ids, mask)
        got = plain(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_an_encoder_with_a_causal_tokenizer_is_refused(bert_dir, tok):
    with pytest.raises(ValueError, match="pools at \\[CLS\\]"):
        RewardModel.from_backbone(bert_dir, tokenizer=tok)
