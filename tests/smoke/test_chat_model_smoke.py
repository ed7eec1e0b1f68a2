"""A model with its own chat template through every trainer: a tiny Llama with a ChatML tokenizer
(pad == eos, as SmolLM2's), on rows without the embedded world's columns (no gold, no topic) and
with multi-turn conversation prompts. Each stage trains, saves what plain transformers loads, and
leaves out the metrics that need gold data."""

import math

import pytest
import torch

from rlhf.chat import encode_prompt, encode_response
from rlhf.config.dpo import DPOConfig
from rlhf.config.ppo import PPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.paths import Paths
from rlhf.reward import RewardModel
from rlhf.stages.dpo import run_dpo
from rlhf.stages.ppo import run_ppo
from rlhf.stages.reward import run_reward
from rlhf.stages.sft import run_sft
from rlhf.stages.sft_samples import run_sft_samples
from rlhf.train import load_causal_lm, load_tokenizer
from rlhf.train.toy import pref_rows, sft_rows, write_jsonl
from tests.chatml import save_tiny_chat_llama

WORLD_ONLY = ("topic", "harmful", "chosen_gold", "rejected_gold", "p_chosen")


def user_rows(rows, turns):
    """The rows as a user's data: no world columns, every third prompt a three-turn conversation."""
    out = []
    for i, row in enumerate(rows):
        row = {k: v for k, v in row.items() if k not in WORLD_ONLY}
        if i % 3 == 0:
            row["prompt"] = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": turns},
                             {"role": "user", "content": row["prompt"]}]
        out.append(row)
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    paths = Paths(root)
    write_jsonl(paths.sft_train, user_rows(sft_rows(24, seed=1), "Hi, ask me about plants."))
    write_jsonl(paths.sft_heldout, user_rows(sft_rows(8, seed=2), "Hi."))
    write_jsonl(paths.pref_train, user_rows(pref_rows(24, seed=3), "Hi, ask me about plants."))
    write_jsonl(paths.pref_heldout, user_rows(pref_rows(8, seed=4), "Hi."))
    write_jsonl(paths.rl_prompts, [{"prompt": r["prompt"]} for r in user_rows(sft_rows(16, seed=5), "Hi.")])
    base = save_tiny_chat_llama(root / "base")
    out = run_sft(SFTConfig(model_path=str(base), max_seq_len=96, packing=False, batch_size=4, micro_batch_size=2,
                            max_steps=4, warmup_steps=1, learning_rate=1e-3, checkpoint_every=4,
                            eval_examples=8, sample_count=4, sample_max_new_tokens=8), paths)
    return paths, out


def test_sft_trains_in_the_models_own_template(project):
    paths, out = project
    tok = load_tokenizer(paths.sft / "model")
    assert "<|im_start|>" in tok.chat_template and tok.pad_token_id == tok.eos_token_id
    assert math.isfinite(out.metrics["eval/loss/sft"])
    row = sft_rows(1, seed=1)[0]
    ids = encode_prompt(tok, row["prompt"]) + encode_response(tok, row["prompt"], row["response"])
    rendered = tok.apply_chat_template([{"role": "user", "content": row["prompt"]},
                                        {"role": "assistant", "content": row["response"]}], tokenize=False)
    assert tok.decode(ids) + "\n" == rendered  # what apply_chat_template users send is what was trained


def test_sft_samples_without_world_prompts_report_eos_share_only(project):
    paths, _ = project
    cfg = SFTConfig(sample_count=4, sample_max_new_tokens=8)
    out = run_sft_samples(cfg, paths)
    assert set(out.metrics) == {"policy/eos_share", "policy/response_length"}
    assert len(out.tables["sft_samples.json"]) == 4


@pytest.fixture(scope="module")
def rewarded(project):
    paths, _ = project
    out = run_reward(RewardConfig(max_seq_len=96, batch_size=4, micro_batch_size=2, max_steps=3, warmup_steps=1,
                                  checkpoint_every=3, norm_examples=8), paths)
    return paths, out


def test_reward_leaves_gold_metrics_out(rewarded):
    paths, rm = rewarded
    assert math.isfinite(rm.metrics["eval/rewards/accuracies"])
    assert not {"eval/rewards/accuracies_gold", "data/bayes_optimal_accuracy",
                "eval/rewards/accuracies_over_bayes"} & set(rm.metrics)
    assert RewardModel.from_pretrained(paths.reward / "model").tokenizer.pad_token_id == \
        load_tokenizer(paths.sft / "model").eos_token_id  # the SFT model's own ChatML tokenizer


def test_dpo_leaves_gold_metrics_out(project):
    paths, _ = project
    dpo = run_dpo(DPOConfig(max_seq_len=96, batch_size=4, micro_batch_size=2, max_steps=2, warmup_steps=1,
                            checkpoint_every=2, eval_batch_size=4), paths)
    assert math.isfinite(dpo.metrics["eval/rewards/accuracies"])
    assert "eval/rewards/accuracies_gold" not in dpo.metrics


def test_ppo_rolls_out_conversations_without_the_missing_eos_penalty(rewarded):
    paths, _ = rewarded
    before = [p.detach().clone() for p in load_causal_lm(paths.sft / "model").parameters()]
    out = run_ppo(PPOConfig(max_steps=2, rollout_batch_size=8, mini_batch_size=4, micro_batch_size=2, ppo_epochs=1,
                            max_new_tokens=8, checkpoint_every=2, missing_eos_score=None, learning_rate=1e-3), paths)
    assert [h["step"] for h in out.history] == [1, 2]
    assert all(math.isfinite(out.history[-1][k]) for k in ("objective/kl", "loss/policy", "objective/scores"))
    assert out.history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-4)
    after = list(load_causal_lm(paths.ppo / "model").parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    # 8 new tokens rarely reach EOS: with the penalty every score would be -1, without it the RM's
    assert out.history[0]["policy/eos_share"] < 1 and out.history[0]["objective/scores"] != pytest.approx(-1.0)
