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


@pytest.mark.parametrize("backbone", ["gpt2_dir", "bert_dir"])
def test_padded_batch_scores_like_unpadded_sequences(backbone, tok, request):
    rm = RewardModel.from_backbone(request.getfixturevalue(backbone), tokenizer=tok, seed=0)
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
    assert torch.all(rm.head.bias == 0)
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
