"""The project's training steps on the shared fixtures, timed.

Each function runs WARMUP + steps optimizer steps (PPO: iterations) the way its stage does
(rlhf/stages/*.py), on the fixture models and batches, with the shared settings, and returns a
`Result`. Only the steps are timed; loading, checkpoints and evaluation are not part of them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.trl_peer import fixtures as fx
from benchmarks.trl_peer.measure import Result, StepClock, bench_device, flop_params, head_params
from benchmarks.trl_peer.settings import (
    ADAM_BETAS,
    ADAM_EPS,
    BATCH,
    CLIP_EPS,
    DPO_BETA,
    GAMMA,
    KL_COEF,
    LAM,
    LEARNING_RATE,
    MAX_GRAD_NORM,
    PPO_EPOCHS,
    PPO_NEW_TOKENS,
    PROMPT_LEN,
    RESPONSE_LEN,
    SEED,
    SEQ_LEN,
    TEMPERATURE,
    VALUE_CLIP,
    VF_COEF,
    WEIGHT_DECAY,
)

MIXED_PRECISION = {"fp32": "no", "bf16": "bf16"}  # settings.PRECISIONS -> the stages' `mixed_precision`


def _optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    from rlhf.train import build_optimizer

    return build_optimizer(model, LEARNING_RATE, WEIGHT_DECAY, ADAM_BETAS, ADAM_EPS)


def _train(model: Any, micro_batch, loss_fn, units, total: int, precision: str
           ) -> tuple[StepClock, list[dict[str, float]]]:
    """`total` steps of `rlhf.train.optimizer_step` on `model` (one micro-batch per step: no
    accumulation, as on the TRL side) under `precision`'s autocast; returns the clock and each step's
    metrics."""
    from rlhf.train import make_accelerator, optimizer_step

    accelerator = make_accelerator(MIXED_PRECISION[precision])
    optimizer = _optimizer(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    clock, stats = StepClock(), []
    for step in range(total):
        stats.append(optimizer_step(model, optimizer, None, accelerator, [micro_batch(step)], loss_fn, units,
                                    MAX_GRAD_NORM))
        clock.tick()
    return clock, stats


def _rows(items: list[Any], step: int) -> list[Any]:
    return items[step * BATCH: (step + 1) * BATCH]


def sft(root: Path, size: str, warmup: int, steps: int, precision: str = "fp32") -> Result:
    """rlhf.stages.sft's step: `micro_batch_loss` (response tokens only) normalised by `loss_tokens`."""
    from rlhf.stages.sft import loss_tokens, micro_batch_loss
    from rlhf.train import collate_sft, load_causal_lm, load_tokenizer

    pad = load_tokenizer(fx.tokenizer_dir(root)).pad_token_id
    rows = fx.read_data(root)["sft"]
    model = load_causal_lm(fx.policy_dir(root, size))
    n, head = flop_params(model, lm_head=False), head_params(model)
    clock, stats = _train(model, lambda s: collate_sft(_rows(rows, s), pad), micro_batch_loss, loss_tokens,
                          warmup + steps, precision)
    scored = BATCH * (RESPONSE_LEN + 1)  # positions whose logits the loss reads (the last prompt token on)
    unread = BATCH * SEQ_LEN - scored  # positions where the last block's MLP does not run either
    return Result("project", "sft", size, clock.seconds(warmup), BATCH, BATCH * SEQ_LEN,
                  6.0 * (n * BATCH * SEQ_LEN + head * scored - last_mlp_params(model) * unread),
                  [s["loss"] for s in stats])


def reward(root: Path, size: str, warmup: int, steps: int, precision: str = "fp32") -> Result:
    """rlhf.stages.reward's step: each pair in one row that holds the prompt once (the stage's
    `share_prompt`), Bradley-Terry loss per pair. FLOPs count the tokens it runs, the prompt once."""
    from rlhf.losses.reward import bradley_terry_loss
    from rlhf.reward import RewardModel
    from rlhf.stages.reward import pair_rewards
    from rlhf.train import collate_preference_batch, load_tokenizer, pairs_in

    pad = load_tokenizer(fx.tokenizer_dir(root)).pad_token_id
    pairs = fx.read_data(root)["pairs"]
    model = RewardModel.from_pretrained(fx.reward_dir(root, size))
    n = flop_params(model, lm_head=False)
    share = model.shares_prefixes()

    def batch(step: int) -> dict[str, torch.Tensor]:
        rows = _rows(pairs, step)
        return collate_preference_batch([p["prompt"] + p["chosen"] for p in rows],
                                        [p["prompt"] + p["rejected"] for p in rows], pad, share)

    def loss_fn(m: Any, mb: dict[str, torch.Tensor], num_pairs: float):
        return bradley_terry_loss(*pair_rewards(m, mb), num_pairs=num_pairs)

    clock, stats = _train(model, batch, loss_fn, pairs_in, warmup + steps, precision)
    run = batch(0)["input_ids"].numel()  # token positions it runs (every step has the same shape)
    unread = run - 2 * BATCH  # positions where the last block's MLP does not run (rlhf/train/last_mlp.py)
    return Result("project", "reward", size, clock.seconds(warmup), BATCH, 2 * BATCH * SEQ_LEN,
                  6.0 * (n * run - last_mlp_params(model) * unread),
                  [s["loss"] for s in stats],
                  {k: stats[0][k] for k in ("rewards/accuracies", "rewards/margins")})


def dpo(root: Path, size: str, warmup: int, steps: int, precision: str = "fp32") -> Result:
    """rlhf.stages.dpo's step with the reference run in the step (no precomputed log-probs, as
    TRL's default): summed response log-probs of each pair in one row that holds the prompt once
    (the stage's `share_prompt`), DPO sigmoid loss. FLOPs count the tokens it runs, the prompt once."""
    from rlhf.config.dpo import DPOConfig
    from rlhf.stages.dpo import collate_pairs, micro_batch_loss
    from rlhf.train import load_causal_lm, load_tokenizer
    from rlhf.train.batching import shares_prefixes

    pad = load_tokenizer(fx.tokenizer_dir(root)).pad_token_id
    pairs = fx.read_data(root)["pairs"]
    policy = load_causal_lm(fx.policy_dir(root, size))
    reference = load_causal_lm(fx.policy_dir(root, size)).eval().requires_grad_(False).to(bench_device())
    n, head = flop_params(policy, lm_head=False), head_params(policy)
    share = shares_prefixes(policy)

    def example(prompt: list[int], response: list[int]) -> dict[str, list[int]]:
        return {"input_ids": prompt + response, "loss_mask": [0] * len(prompt) + [1] * len(response)}

    def batch(step: int) -> dict[str, torch.Tensor]:
        return collate_pairs([(example(p["prompt"], p["chosen"]), example(p["prompt"], p["rejected"]))
                              for p in _rows(pairs, step)], pad, share)

    cfg = DPOConfig(beta=DPO_BETA, loss_type="sigmoid", label_smoothing=0.0, logp_reduction="sum")

    def loss_fn(m: Any, mb: dict[str, torch.Tensor], num_pairs: float):
        return micro_batch_loss(cfg, m, reference, mb, num_pairs)  # the stage's, reference run in the step

    clock, stats = _train(policy, batch, loss_fn, lambda mb: len(mb["lengths"]) // 2, warmup + steps,
                          precision)
    rows, width = batch(0)["input_ids"].shape  # every step has the same shape
    scored = rows * (width - PROMPT_LEN + 1)  # positions whose logits are computed: the last prompt token on
    unread = rows * width - scored  # positions where the last block's MLP does not run either
    return Result("project", "dpo", size, clock.seconds(warmup), BATCH, 2 * BATCH * SEQ_LEN,
                  (6.0 + 2.0) * (n * rows * width + head * scored - last_mlp_params(policy) * unread),
                  [s["loss"] for s in stats],
                  {"logps/chosen": stats[0]["logps/chosen"], "logps/rejected": stats[0]["logps/rejected"]})


class TimedGenerate:
    """Wraps `rlhf.stages.ppo.generate` to time each call and count the tokens it sampled."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds, self.tokens = inner, [], []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        samples = self.inner(*args, **kwargs)
        self.seconds.append(time.perf_counter() - t0)
        self.tokens.append(int(samples.response_ids.numel()))  # (B, R): every row runs to the longest
        return samples


def ppo(root: Path, size: str, warmup: int, steps: int, precision: str = "fp32") -> Result:
    """rlhf.stages.ppo's iteration: `make_experience` (sample, score, KL-shaped rewards, GAE) then
    `ppo_update` (K epochs of clipped policy and value losses); policy and critic each have an AdamW."""
    import rlhf.stages.ppo as stage
    from rlhf.config.ppo import PPOConfig
    from rlhf.generation import row_seed
    from rlhf.reward import RewardModel
    from rlhf.train import load_causal_lm, load_tokenizer, make_accelerator, optimizer_from

    total = warmup + steps
    cfg = PPOConfig(max_steps=total, rollout_batch_size=BATCH, mini_batch_size=BATCH, micro_batch_size=BATCH,
                    ppo_epochs=PPO_EPOCHS, max_new_tokens=PPO_NEW_TOKENS, temperature=TEMPERATURE,
                    missing_eos_score=None, kl_estimator="k1", beta=KL_COEF, gamma=GAMMA, lam=LAM,
                    clip_eps=CLIP_EPS, value_clip=VALUE_CLIP, vf_coef=VF_COEF, learning_rate=LEARNING_RATE,
                    value_learning_rate=LEARNING_RATE, adam_beta1=ADAM_BETAS[0], adam_beta2=ADAM_BETAS[1],
                    adam_eps=ADAM_EPS, weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM,
                    mixed_precision=MIXED_PRECISION[precision], checkpoint_every=total,
                    seed=SEED)
    tok = load_tokenizer(fx.tokenizer_dir(root))
    fixture_prompts = fx.read_data(root)["prompts"]
    prompts = [p["text"] for p in fixture_prompts]
    policy = load_causal_lm(fx.policy_dir(root, size))
    reference = load_causal_lm(fx.policy_dir(root, size)).requires_grad_(False).eval()
    critic = stage.make_critic(fx.reward_dir(root, size), fx.policy_dir(root, size), tok, SEED)
    reward_model = RewardModel.from_pretrained(fx.reward_dir(root, size)).requires_grad_(False).eval()
    n_lm, n_rm = flop_params(policy, lm_head=True), flop_params(critic, lm_head=False)
    accelerator = make_accelerator(cfg.mixed_precision)  # rollout and update under one autocast
    opt_policy, opt_value = optimizer_from(policy, cfg), optimizer_from(critic, cfg, cfg.value_learning_rate)
    policy, critic, opt_policy, opt_value = accelerator.prepare(policy, critic, opt_policy, opt_value)
    reference, reward_model = reference.to(accelerator.device), reward_model.to(accelerator.device)

    timed = stage.generate = TimedGenerate(stage.generate)  # this worker process only
    clock, scoring, updates, losses, first = StepClock(), [], [], [], {}
    for it in range(total):
        t0 = time.perf_counter()
        first_mb = stage.FirstMinibatch.plan(cfg, policy, critic, accelerator, BATCH, row_seed(SEED, it))
        with accelerator.autocast():  # as run_ppo: the reference and reward model under it too
            batch, metrics = stage.make_experience(
                cfg, accelerator.unwrap_model(policy), reference, accelerator.unwrap_model(critic), reward_model,
                tok, _rows(prompts, it), KL_COEF, seed=SEED * 100_003 + it, accelerator=accelerator, first=first_mb)
        t1 = time.perf_counter()
        stats = stage.ppo_update(cfg, policy, critic, opt_policy, opt_value, accelerator, batch, row_seed(SEED, it),
                                 first=first_mb)
        clock.tick()
        scoring.append(t1 - t0 - timed.seconds[-1])
        updates.append(time.perf_counter() - t1)
        mean = {k: sum(s[k] for s in stats) / len(stats) for k in ("loss/policy", "loss/value")}  # over its steps
        losses.append(mean["loss/policy"] + VF_COEF * mean["loss/value"])
        if it == 0:
            first = {**mean, "objective/kl": metrics["objective/kl"]}
    prompt = len(fixture_prompts[0]["ids"])  # PPO_PROMPT_LEN, or more under a checkpoint's template (fixtures)
    tokens = BATCH * (prompt + PPO_NEW_TOKENS)
    # before the last prompt token, policy and reference passes run neither the LM head nor the last
    # MLP, and critic passes not the last MLP; the reward model runs its last MLP at one position a row;
    # the LM head skips each row's last position too, whose logits predict nothing (forward_logits)
    before = BATCH * (prompt - 1)
    # the update's first minibatch (here the whole batch: one minibatch per epoch) gives log pi_old
    # and V_old, so the evaluation pass runs through neither policy nor critic (FirstMinibatch)
    evaluated = 1.0 - (len(first_mb.rows) / BATCH if first_mb is not None else 0.0)
    flops = ppo_flops(n_lm, n_rm, tokens, sum(timed.tokens[warmup:]) / max(steps, 1),
                      skip_policy=head_params(policy) * (before + BATCH) + last_mlp_params(policy) * before,
                      skip_critic=last_mlp_params(critic) * before,
                      skip_reward=last_mlp_params(reward_model) * (tokens - BATCH),
                      policy_evaluated=evaluated, critic_evaluated=evaluated)
    return Result("project", "ppo", size, clock.seconds(warmup), BATCH, tokens, flops, losses, first,
                  generate_seconds=timed.seconds[warmup:], score_seconds=scoring[warmup:],
                  update_seconds=updates[warmup:], generated_tokens=timed.tokens[warmup:],
                  gen_flops_per_token=2.0 * n_lm)


def ppo_flops(n_lm: int, n_rm: int, tokens: int, generated: float, skip_policy: float = 0.0,
              skip_critic: float = 0.0, skip_reward: float = 0.0, policy_evaluated: float = 1.0,
              critic_evaluated: float = 1.0) -> float:
    """Nominal model FLOPs of one PPO iteration over `tokens` episode tokens (prompt + response):
    sampling 2 N_lm per sampled token; scoring forward passes of policy, reference (2 N_lm each),
    critic and reward model (2 N_rm each); K epochs of policy and critic training (6 N each). A
    `skip_*` is the parameter-positions one pass of that model does not run (a policy's `skip_policy`
    also holds for the reference); `policy_evaluated` / `critic_evaluated` the share of the rows that
    the scoring pass runs through the policy / critic (the rest take log pi_old and V_old elsewhere:
    TRL 1.12 from the sampler's logits, the project from the update's first minibatch). The same
    formula serves both sides (`peer_ppo`: nothing skipped, no policy pass)."""
    policy, critic = n_lm * tokens - skip_policy, n_rm * tokens - skip_critic
    score = 2.0 * ((1.0 + policy_evaluated) * policy + critic_evaluated * critic + n_rm * tokens - skip_reward)
    update = PPO_EPOCHS * 6.0 * (policy + critic)
    return 2.0 * n_lm * generated + score + update


def last_mlp_params(model: Any) -> int:
    """Parameters of the last-block MLP of a causal LM or of a reward model's body, which runs only
    at the positions a head or loss reads (rlhf/train/last_mlp.py)."""
    from rlhf.train.last_mlp import last_mlp

    mlp = last_mlp(getattr(model, "backbone", model))
    return 0 if mlp is None else sum(p.numel() for p in mlp.parameters())


RUNNERS = {"sft": sft, "reward": reward, "dpo": dpo, "ppo": ppo}
