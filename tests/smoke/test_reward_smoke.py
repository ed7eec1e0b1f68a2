"""Reward model on the toy world: from the SFT model, with a frozen backbone, and on a BERT encoder."""

import os

import pytest
import torch

from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.paths import Paths
from rlhf.reward import RewardModel
from rlhf.stages.reward import run_reward
from rlhf.stages.sft import run_sft
from rlhf.train import load_causal_lm
from rlhf.train.toy import make_toy_world

RM = dict(max_steps=30, batch_size=8, micro_batch_size=4, warmup_steps=2, learning_rate=2e-3, log_every=5,
          checkpoint_every=15, max_seq_len=64, norm_examples=16)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    paths = make_toy_world(tmp_path_factory.mktemp("rm"), n_pref=96)
    run_sft(SFTConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64, max_seq_len=64, batch_size=8,
                      micro_batch_size=8, max_steps=5, warmup_steps=1, sample_count=0, eval_examples=8), paths)
    return paths


def _fresh(world: Paths, tmp_path) -> Paths:
    """A new project folder sharing the world's data, tokenizer and SFT model."""
    paths = Paths(tmp_path)
    paths.artifacts.mkdir(parents=True)
    for name in ("data", "tokenizer", "sft"):
        os.symlink(world.artifacts / name, paths.artifacts / name)
    return paths


def test_reward_trains_and_saves_a_scoring_model(world, tmp_path):
    paths = _fresh(world, tmp_path)
    out = run_reward(RewardConfig(**RM), paths)
    losses = [h["loss/reward"] for h in out.history]
    assert losses[-1] < losses[0]
    m = out.metrics
    assert m["eval/rewards/accuracies"] >= 0.75 and m["eval/rewards/accuracies_gold"] >= 0.75
    assert m["data/bayes_optimal_accuracy"] == pytest.approx(0.9)  # toy labels: p_chosen in {0.1, 0.9}
    assert m["eval/rewards/accuracies_over_bayes"] == pytest.approx(m["eval/rewards/accuracies"] / 0.9)
    assert {"eval/rewards/margins", "reward_model/norm_mean", "reward_model/norm_std", "loss/reward",
            "throughput/pairs_per_s"} <= set(m)
    rm = RewardModel.from_pretrained(out.models["rlhf-reward"])
    assert rm.norm["mean"] == pytest.approx(m["reward_model/norm_mean"]) and rm.norm["std"] == pytest.approx(m["reward_model/norm_std"])
    good = ("\n\nHuman: How do I water a fern?\n\nAssistant: "
            "Water the fern lightly once a week and let the soil dry between waterings.")
    bad = "\n\nHuman: How do I water a fern?\n\nAssistant: I do not know."
    assert rm.compare(good, bad)["preference"] == "a"
    # the backbone moved away from the SFT weights
    sft = load_causal_lm(world.sft / "model").transformer.state_dict()
    assert any(not torch.equal(v, rm.backbone.state_dict()[k]) for k, v in sft.items())


def test_frozen_backbone_trains_only_the_head(world, tmp_path):
    paths = _fresh(world, tmp_path)
    init = RewardModel.from_backbone(world.sft / "model", seed=0, max_seq_len=64)
    out = run_reward(RewardConfig(**{**RM, "freeze_backbone": True, "max_steps": 10}), paths)
    rm = RewardModel.from_pretrained(out.models["rlhf-reward"])
    sft = load_causal_lm(world.sft / "model").transformer.state_dict()
    for k, v in rm.backbone.state_dict().items():
        assert torch.equal(v, sft[k]), f"frozen {k} changed"
    assert not torch.equal(rm.head.weight, init.head.weight)


def test_an_encoder_without_its_own_tokenizer_is_refused(world, tmp_path):
    """A BERT-like backbone pools at [CLS] and so needs its own tokenizer; paired with the project's
    (EOS, no [CLS]) it would read a meaningless token, so the stage stops and says why."""
    from transformers import BertConfig, BertModel

    from rlhf.train import load_tokenizer

    tok = load_tokenizer(world.tokenizer)
    bert_dir = tmp_path / "bert"
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(bert_dir)
    paths = _fresh(world, tmp_path / "project")
    with pytest.raises(ValueError, match="encoder.*own tokenizer"):
        run_reward(RewardConfig(**{**RM, "model_path": str(bert_dir), "max_steps": 10}), paths)


def test_encoder_with_its_own_tokenizer_trains_pools_at_cls_and_reloads(world, tmp_path):
    import json
    import math
    import random

    from rlhf.chat import prompt_text, response_text
    from rlhf.reward.model import _load_sequence_classifier, split_classifier
    from rlhf.train import read_jsonl
    from tests.encoders import save_tiny_bert, train_wordpiece

    rows = read_jsonl(world.pref_train)
    wp = train_wordpiece([prompt_text(r["prompt"]) + response_text(r["chosen"]) for r in rows], vocab_size=150)
    bert_dir = save_tiny_bert(tmp_path / "encoder", len(wp), wp)
    paths = _fresh(world, tmp_path / "project")
    cfg = RewardConfig(**{**RM, "model_path": str(bert_dir), "max_steps": 6, "checkpoint_every": 6})
    out = run_reward(cfg, paths)
    assert all(math.isfinite(h["loss/reward"]) for h in out.history)

    model_dir = out.models["rlhf-reward"]
    saved = json.loads((model_dir / "reward_config.json").read_text(encoding="utf-8"))
    assert saved["pooling"] == "cls" and saved["tokenizer"] == "backbone"
    rm = RewardModel.from_pretrained(model_dir)
    assert rm.tokenizer.get_vocab() == wp.get_vocab() and rm.tokenizer.eos_token is None  # not the project's
    assert rm.encode("hi", "hello")[0] == wp.cls_token_id
    init = split_classifier(_load_sequence_classifier(bert_dir))[1].state_dict()
    assert any(not torch.equal(v, rm.backbone.state_dict()[k]) for k, v in init.items())  # trained
    # the reloaded model scores the stage's own normalisation sample as the trained model did
    demos = read_jsonl(world.sft_train)
    demos = random.Random(cfg.seed).sample(demos, min(cfg.norm_examples, len(demos)))
    raw = rm.raw_scores([rm.encode(r["prompt"], r["response"]) for r in demos])
    assert float(raw.mean()) == pytest.approx(out.metrics["reward_model/norm_mean"], abs=1e-5)
    assert float(raw.std()) == pytest.approx(out.metrics["reward_model/norm_std"], abs=1e-5)
    assert rm.score_pairs([r["prompt"] for r in demos], [r["response"] for r in demos]) == \
        pytest.approx(((raw - rm.norm["mean"]) / rm.norm["std"]).tolist(), abs=1e-5)


def test_project_tokenizer_too_large_for_the_backbone_is_refused(world, tmp_path):
    from rlhf.train import load_tokenizer
    from tests.encoders import save_tiny_bert

    n = len(load_tokenizer(world.tokenizer))
    bert_dir = save_tiny_bert(tmp_path / "small", vocab_size=n - 10)  # no tokenizer saved with it
    paths = _fresh(world, tmp_path / "project")
    with pytest.raises(ValueError, match=rf"reward\.model_path.*{n} tokens.*{n - 10} rows"):
        run_reward(RewardConfig(**{**RM, "model_path": str(bert_dir), "max_steps": 2}), paths)
