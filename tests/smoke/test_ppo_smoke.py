"""A few PPO iterations on a tiny GPT-2 in a toy world: finite losses, the policy and critic move,
the reference and reward model stay put, ratio 1 on the first minibatch, clipping once it moved."""

import math
import shutil
from unittest.mock import Mock

import pytest
import torch

import rlhf.stages.ppo
from rlhf.config.ppo import PPOConfig
from rlhf.generation import encode_prompts, generate
from rlhf.logprobs import forward_logits, logprobs_from_logits
from rlhf.stages.ppo import make_critic, make_experience, ppo_update, run_ppo
from rlhf.reward import RewardModel
from rlhf.train import build_gpt2, load_causal_lm, load_tokenizer, make_accelerator
from rlhf.train.toy import sft_rows
from tests.checkpoints import as_if_killed
from tests.spies import record_adamw
from tests.worlds import rl_world


@pytest.fixture()
def world(tmp_path):
    return rl_world(tmp_path)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


TINY = dict(max_steps=2, rollout_batch_size=8, mini_batch_size=4, micro_batch_size=2, ppo_epochs=2,
            max_new_tokens=8, checkpoint_every=1)


def test_ppo_few_steps(world):
    cfg = PPOConfig(**TINY, learning_rate=1e-3, temperature=1.0)
    sft_before = _params(load_causal_lm(world.sft / "model"))
    rm_before = _params(RewardModel.from_pretrained(world.reward / "model"))
    out = run_ppo(cfg, world)
    assert out.models == {"rlhf-ppo": world.ppo / "model"}
    assert [h["step"] for h in out.history] == [1, 2]
    for key in ("objective/kl", "objective/entropy", "objective/rlhf_reward", "objective/scores",
                "objective/non_score_reward", "policy/approxkl", "policy/clipfrac", "loss/policy",
                "loss/value", "val/explained_variance", "val/clipfrac", "objective/beta", "policy/response_length",
                "policy/eos_share"):
        assert math.isfinite(out.history[-1][key]), key
    assert out.history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at first
    assert not torch.equal(_params(load_causal_lm(world.ppo / "model")), sft_before)
    torch.testing.assert_close(_params(load_causal_lm(world.sft / "model")), sft_before, rtol=0, atol=0)
    torch.testing.assert_close(_params(RewardModel.from_pretrained(world.reward / "model")), rm_before, rtol=0, atol=0)


def test_ppo_resumes_to_the_same_weights(world, monkeypatch):
    cfg = PPOConfig(**{**TINY, "max_steps": 3}, learning_rate=1e-3, keep_checkpoints=3)
    run_ppo(cfg, world)
    full = _params(load_causal_lm(world.ppo / "model"))
    (kept,) = as_if_killed(world.checkpoints("ppo"))  # killed right after the step-1 checkpoint
    assert kept.name == "step-00000001"
    shutil.rmtree(world.ppo)  # as `dvc repro` clears a stage's outputs before rerunning it
    updates = Mock(wraps=rlhf.stages.ppo.ppo_update)
    monkeypatch.setattr(rlhf.stages.ppo, "ppo_update", updates)
    run_ppo(cfg, world)
    assert updates.call_count == 3 - 1
    torch.testing.assert_close(_params(load_causal_lm(world.ppo / "model")), full)


def test_ppo_disabled_writes_skipped(world):
    out = run_ppo(PPOConfig(enabled=False), world)
    assert (world.ppo / "SKIPPED").is_file() and not (world.ppo / "model").exists()
    assert out.models == {}


def test_ratio_is_one_first_then_clipping_engages(world):
    tok = load_tokenizer(world.sft / "model")
    policy, reference = load_causal_lm(world.sft / "model"), load_causal_lm(world.sft / "model")
    critic = make_critic(world.reward / "model", world.sft / "model", tok, seed=0)
    rm = RewardModel.from_pretrained(world.reward / "model")
    cfg = PPOConfig(rollout_batch_size=8, mini_batch_size=4, micro_batch_size=4, ppo_epochs=4, max_new_tokens=8)
    prompts = [r["prompt"] for r in sft_rows(8, seed=5)]
    batch, _ = make_experience(cfg, policy, reference, critic, rm, tok, prompts, beta=0.1, seed=0,
                               accelerator=make_accelerator("no"))
    opt_p = torch.optim.Adam(policy.parameters(), lr=3e-2)  # large: the policy moves a lot in one step
    opt_v = torch.optim.Adam(critic.parameters(), lr=1e-3)
    stats = ppo_update(cfg, policy, critic, opt_p, opt_v, make_accelerator("no"), batch, seed=0)
    assert len(stats) == 4 * 2  # K epochs x (N / mini_batch_size) optimizer steps
    assert stats[0]["policy/ratio"] == pytest.approx(1.0, abs=1e-5)
    assert stats[0]["policy/approxkl"] < 1e-10 and stats[0]["policy/clipfrac"] == 0.0
    assert max(s["policy/clipfrac"] for s in stats[1:]) > 0.0


def test_teacher_forced_logprobs_match_the_sampler(world):
    """log pi(y_t) recomputed with logits / T equals the sampler's own log-prob of the token it drew."""
    from transformers import GenerationConfig

    tok = load_tokenizer(world.tokenizer)
    model = build_gpt2(tok, 2, 2, 32, 128, seed=0).eval()
    prompts = ["How do I water a fern?", "Where should I put a rose? It is a gift."]
    temperature = 0.7
    samples = generate(model, tok, prompts, max_new_tokens=6, temperature=temperature, seed=3)
    ids, mask = encode_prompts(tok, prompts)
    gen_cfg = GenerationConfig(do_sample=True, temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=6,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg,
                             output_scores=True, return_dict_in_generate=True)
    sampled = out.sequences[:, ids.shape[1]:]
    assert torch.equal(sampled[samples.response_mask.bool()], samples.response_ids[samples.response_mask.bool()])
    sampler_logp = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, sampled[..., None]).squeeze(-1)  # (B, R)
    seqs, attn = samples.sequences, samples.attention_mask
    P = samples.prompt_ids.shape[1]
    teacher = logprobs_from_logits(forward_logits(model, seqs, attn, temperature)[:, P - 1: -1], seqs[:, P:])
    m = samples.response_mask.bool()
    torch.testing.assert_close(teacher[m], sampler_logp[:, : m.shape[1]][m], atol=1e-4, rtol=1e-4)


def test_update_with_accumulation_equals_one_large_batch(world):
    """Micro-batches of 2 accumulate to the same optimizer step as micro-batches of 4 (STYLE rule 8)."""
    tok = load_tokenizer(world.sft / "model")
    prompts = [r["prompt"] for r in sft_rows(8, seed=5)]
    results = []
    for micro in (4, 2):
        policy, reference = load_causal_lm(world.sft / "model"), load_causal_lm(world.sft / "model")
        critic = make_critic(world.reward / "model", world.sft / "model", tok, seed=0)
        rm = RewardModel.from_pretrained(world.reward / "model")
        cfg = PPOConfig(rollout_batch_size=8, mini_batch_size=4, micro_batch_size=micro, ppo_epochs=1, max_new_tokens=8)
        batch, _ = make_experience(cfg, policy, reference, critic, rm, tok, prompts, beta=0.1, seed=0,
                               accelerator=make_accelerator("no"))
        opt_p = torch.optim.SGD(policy.parameters(), lr=0.1)  # SGD: the step is the gradient itself
        opt_v = torch.optim.SGD(critic.parameters(), lr=0.1)
        ppo_update(cfg, policy, critic, opt_p, opt_v, make_accelerator("no"), batch, seed=0)
        results.append((_params(policy), _params(critic)))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-4)


def test_responses_without_eos_score_missing_eos_score(world):
    """The score PPO optimises is `rlhf.rl.penalise_missing_eos` of the reward model's, the one
    evaluation reports as eval/proxy/ppo_score: a random policy never ends within 2 tokens."""
    tok = load_tokenizer(world.sft / "model")
    policy, reference = load_causal_lm(world.sft / "model"), load_causal_lm(world.sft / "model")
    critic = make_critic(world.reward / "model", world.sft / "model", tok, seed=0)
    rm = RewardModel.from_pretrained(world.reward / "model")
    cfg = PPOConfig(rollout_batch_size=4, mini_batch_size=4, micro_batch_size=4, max_new_tokens=2,
                    missing_eos_score=-0.625)
    prompts = [r["prompt"] for r in sft_rows(4, seed=5)]
    _, metrics = make_experience(cfg, policy, reference, critic, rm, tok, prompts, beta=0.1, seed=0,
                               accelerator=make_accelerator("no"))
    assert metrics["policy/eos_share"] == 0.0
    assert metrics["objective/scores"] == pytest.approx(-0.625)


def test_ppo_honours_the_shared_training_fields(world, monkeypatch):
    """AdamW settings, the schedule (one step per iteration), log_every and keep_checkpoints come
    from the config (PPO once hard-coded Adam with eps 1e-5 and a constant learning rate)."""
    built = record_adamw(monkeypatch)
    cfg = PPOConfig(**{**TINY, "max_steps": 4, "checkpoint_every": 1}, learning_rate=1e-3, value_learning_rate=2e-3,
                    schedule="linear", adam_beta1=0.8, adam_eps=1e-6, log_every=2, keep_checkpoints=1)
    out = run_ppo(cfg, world)
    assert built == [{"lr": 1e-3, "betas": (0.8, 0.999), "eps": 1e-6, "fused": True}, {"lr": 2e-3, "betas": (0.8, 0.999), "eps": 1e-6, "fused": True}]
    assert [h["step"] for h in out.history] == [2, 4]
    assert out.history[0]["train/lr"] == pytest.approx(1e-3 * 3 / 4) and out.history[1]["train/lr"] == pytest.approx(1e-3 / 4)
    (finished,) = world.checkpoints("ppo").iterdir()
    assert len([p for p in finished.iterdir() if p.name.startswith("step-")]) == 1


class _DDPAccelerator:
    """What `ppo_update` uses of an accelerator, for models wrapped in torch's DDP by the test."""

    num_processes, process_index = 1, 0

    @staticmethod
    def no_sync(model):
        return model.no_sync()

    @staticmethod
    def backward(loss):
        loss.backward()

    @staticmethod
    def clip_grad_norm_(params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def test_ddp_syncs_gradients_once_per_minibatch(world, tmp_path):
    """DDP decides at the forward whether the next backward all-reduces, so the micro-batches
    before the last must run forward and backward under `no_sync`: a minibatch of 2 micro-batches
    then communicates exactly as much as one of a single micro-batch (counted by a comm hook)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    tok = load_tokenizer(world.sft / "model")
    prompts = [r["prompt"] for r in sft_rows(8, seed=5)]
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        reductions = {}
        for micro in (4, 2):
            policy, reference = load_causal_lm(world.sft / "model"), load_causal_lm(world.sft / "model")
            critic = make_critic(world.reward / "model", world.sft / "model", tok, seed=0)
            rm = RewardModel.from_pretrained(world.reward / "model")
            cfg = PPOConfig(rollout_batch_size=8, mini_batch_size=4, micro_batch_size=micro, ppo_epochs=1,
                            max_new_tokens=8)
            batch, _ = make_experience(cfg, policy, reference, critic, rm, tok, prompts, beta=0.1, seed=0,
                                       accelerator=make_accelerator("no"))
            calls = []

            def counting(state, bucket):
                calls.append(bucket.index())
                return torch.distributed.all_reduce(bucket.buffer(), async_op=True).get_future().then(
                    lambda fut: fut.value()[0])

            wrapped = [DDP(m) for m in (policy, critic)]
            for m in wrapped:
                m.register_comm_hook(None, counting)
            opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in wrapped]
            ppo_update(cfg, *wrapped, *opts, _DDPAccelerator(), batch, seed=0)
            reductions[micro] = len(calls)
        assert reductions[4] > 0
        assert reductions[2] == reductions[4]  # 2 minibatches, each synced once
    finally:
        torch.distributed.destroy_process_group()
