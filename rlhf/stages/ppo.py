"""The `ppo` stage: PPO against the reward model with a per-token KL penalty to the SFT policy.

One iteration, as Ziegler et al. (2019) and Ouyang et al. (2022) define it, with the details of
Huang et al. (2024, "The N+ implementation details of RLHF with PPO"):
  1. rollout   sample N prompts; the policy answers with the KV cache (temperature T, top-p),
               each prompt from its own random stream; everything after the first EOS is cut
  2. evaluate  one teacher-forced pass each (no gradient): log pi_old and V_old (policy, critic,
               logits / T), log pi_ref (frozen SFT); the reward model scores the decoded text,
               re-encoded with its own tokenizer; a response without EOS gets a fixed score
  3. rewards   r_t = -beta * KL_t on every response token, + score on the last one
  4. GAE       advantages and returns, advantages whitened over the batch
  5. update    K epochs over shuffled minibatches: clipped policy loss + c1 * clipped value loss
               - c2 * entropy; log pi_old, V_old, A and G stay frozen from steps 2-4
  6. log       metrics; adapt beta; checkpoint

In P data-parallel processes (`accelerate launch`, RLHF_NUM_PROCESSES), each process samples, scores
and evaluates its N / P prompts; the shards are gathered, so steps 3-4 (whitening included) and every
metric see the whole batch, as one process would. In step 5 each process takes its 1 / P of every
minibatch and DDP averages the gradients, so the update is the one-process update: the same run
within float tolerance, whatever P.

Models: policy and reference from `paths.sft / "model"`; reward model from `paths.reward / "model"`;
critic initialised from the reward model (backbone + head applied at every token). Writes the
policy + tokenizer to `paths.ppo / "model"` and resumable checkpoints to `paths.checkpoints("ppo")`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlhf.config.ppo import PPOConfig
from rlhf.errors import UserError
from rlhf.files import write_jsonl
from rlhf.generation import generate, row_seed
from rlhf.logprobs import logprobs_and_entropy, response_logits
from rlhf.losses.ppo import explained_variance, ppo_policy_loss, ppo_value_loss
from rlhf.ops import masked_mean, masked_sum, masked_whiten
from rlhf.paths import Paths
from rlhf.reward import RewardModel
from rlhf.reward.model import HEAD_FILE
from rlhf.rl import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    kl_estimate,
    kl_shaped_rewards,
    penalise_missing_eos,
)
from rlhf.stage import StageOutput, skip_stage
from rlhf.train import (
    BatchOrder,
    load_causal_lm,
    load_tokenizer,
    make_accelerator,
    optimizer_from,
    progress_bar,
    read_jsonl,
    scheduler_from,
    seed_everything,
    with_activation_checkpointing,
)
from rlhf.train.lora import (
    AdapterOff,
    finish_outputs,
    has_adapter,
    lora_enabled,
    saved_form,
    transformers_model,
    with_lora,
    with_reward_lora,
)
from rlhf.train.last_mlp import read_from
from rlhf.train.loop import TrainingRun
from rlhf.train.optim import advance, nonfinite, summed_over_processes
from rlhf.train.sharding import prepare, shard

VALUE_DIR = "value"  # the critic's sub-directory inside a checkpoint
HISTORY = "history.jsonl"  # per-iteration statistics in artifacts/ppo/


# ---------------------------------------------------------------- the critic
def make_critic(reward_dir: Path, sft_dir: Path, tokenizer: Any, seed: int) -> RewardModel:
    """V(s_t): the reward model's backbone and head, read at every token instead of the last one.

    Initialising from the reward model (Ouyang et al. 2022, sec. 3.5) needs the critic to read the
    policy's own token ids, so the reward model must share the policy's vocabulary and
    architecture; otherwise the critic starts from the SFT backbone with a fresh head. The head is
    rescaled to the normalised units of the scores: w' = w / std, b' = (b - mean) / std.
    """
    rm = RewardModel.from_pretrained(reward_dir)
    policy_type = json.loads((sft_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
    if rm.tokenizer.get_vocab() != tokenizer.get_vocab() or rm.backbone.config.model_type != policy_type:
        critic = RewardModel.from_backbone(sft_dir, tokenizer, seed)
        critic.head = value_head(critic.head, 0.0, 1.0)
        return critic
    rm.head = value_head(rm.head, rm.norm["mean"], rm.norm["std"])
    rm.norm = {"mean": 0.0, "std": 1.0}
    return rm


def value_head(head: torch.nn.Linear, mean: float, std: float) -> torch.nn.Linear:
    """The head in normalised units, w' = w / std, b' = (b - mean) / std, with a bias even where the
    reward model's head has none (a decoder's `score`): values need an offset."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        out = torch.nn.Linear(head.in_features, 1)
        out.weight.copy_(head.weight / std)
        bias = head.bias if head.bias is not None else torch.zeros(1)
        out.bias.copy_((bias - mean) / std)
    return out


def token_values(critic: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The critic's value at every position (through its forward, so that DDP sees the pass), read
    from column `start` on: the last block's MLP runs there only (rlhf/train/last_mlp.py), so the
    columns before it hold no value. Shapes: (B, T), (B, T) -> (B, T)."""
    with read_from(critic, start):
        return critic(input_ids, attention_mask, per_token=True)  # (B, T)


def response_forward(policy: Any, critic: Any, seqs: torch.Tensor, attn: torch.Tensor, prompt_len: int,
                     temperature: float, entropy_grad: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per response token: log pi (logits / T), entropy (with gradients only if `entropy_grad`),
    and V (None without a critic).

    seqs, attn: (B, P + R) left-padded prompts then responses. The logits at column P-1+t predict
    response token t, and V(s_t) is read at the same column (the state before token t).
    Returns (B, R), (B, R), (B, R).
    """
    logits = response_logits(policy, seqs, attn, prompt_len, temperature)  # (B, R, V)
    logprobs, entropy = logprobs_and_entropy(logits, seqs[:, prompt_len:], entropy_grad)  # (B, R), (B, R)
    values = None
    if critic is not None:
        values = token_values(critic, seqs, attn, prompt_len - 1)[:, prompt_len - 1: -1]  # (B, R)
    return logprobs, entropy, values


# ---------------------------------------------------------------- steps 1-4: rollout to advantages
def gather_rows(accelerator: Any, tensors: dict[str, torch.Tensor], left: tuple[str, ...] = (),
                pad: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Every process's rows of each tensor, in process order: the whole batch, as one process would
    hold it. Columns (dim 1) are padded to the widest process's, on the left for the keys in `left`
    (left-padded prompts), on the right otherwise, with `pad[key]` (default 0)."""
    if accelerator.num_processes == 1:
        return tensors
    from accelerate.utils import pad_across_processes

    out = {}
    for key, t in tensors.items():
        if t.dim() > 1:
            t = pad_across_processes(t, dim=1, pad_index=(pad or {}).get(key, 0), pad_first=key in left)
        out[key] = accelerator.gather(t.contiguous())
    return out


@torch.no_grad()
def make_experience(cfg: PPOConfig, policy: Any, reference: Any, critic: Any, reward_model: RewardModel,
                    tokenizer: Any, prompts: list[str], beta: float, seed: int, accelerator: Any
                    ) -> tuple[dict, dict[str, float]]:
    """Sample, score and shape one batch of N prompts. This process samples and evaluates its shard
    (rows [r * N / P, (r + 1) * N / P) of P processes), each prompt from its own random stream
    `row_seed(seed, row)`; steps 3-4 run on the gathered batch. Returns frozen tensors of the whole
    batch for the update, and the rollout metrics."""
    device = accelerator.device
    size = len(prompts) // accelerator.num_processes
    rows = range(accelerator.process_index * size, (accelerator.process_index + 1) * size)
    # 1. rollout with the KV cache; responses cut after the first EOS
    policy.eval()
    samples = generate(policy, tokenizer, [prompts[i] for i in rows], max_new_tokens=cfg.max_new_tokens,
                       temperature=cfg.temperature, top_p=cfg.top_p, batch_size=size, max_prompt_len=cfg.max_prompt_len,
                       budget_key="ppo.max_new_tokens", row_seeds=[row_seed(seed, i) for i in rows])
    seqs, attn = samples.sequences.to(device), samples.attention_mask.to(device)  # (n, p + r)
    prompt_len = samples.prompt_ids.shape[1]
    # 2. frozen log-probs and values from teacher-forced passes; scores through text
    logprobs, entropy, values = response_forward(policy, critic, seqs, attn, prompt_len, cfg.temperature)
    ref_logprobs, _, _ = response_forward(reference, None, seqs, attn, prompt_len, cfg.temperature)
    scores = torch.tensor(reward_model.score_pairs([prompts[i] for i in rows], samples.texts), device=device)  # (n,)
    #    the whole batch on every process: (N, P) prompts, (N, R) responses, (N,) per sequence
    full = gather_rows(accelerator, {
        "prompt_ids": samples.prompt_ids.to(device), "prompt_mask": samples.prompt_mask.to(device),
        "response_ids": samples.response_ids.to(device), "mask": samples.response_mask.to(device).float(),
        "logprobs": logprobs, "entropy": entropy, "values": values, "ref_logprobs": ref_logprobs,
        "scores": scores, "ended": samples.ended.to(device).long()},
        left=("prompt_ids", "prompt_mask"), pad={"prompt_ids": tokenizer.pad_token_id,
                                                 "response_ids": tokenizer.pad_token_id})
    logprobs, entropy, values, mask = full["logprobs"], full["entropy"], full["values"], full["mask"]  # (N, R)
    seqs = torch.cat([full["prompt_ids"], full["response_ids"]], dim=1)  # (N, P + R)
    attn = torch.cat([full["prompt_mask"], full["mask"].long()], dim=1)  # (N, P + R)
    prompt_len = full["prompt_ids"].shape[1]
    ended = full["ended"].bool()
    scores = penalise_missing_eos(full["scores"], ended, cfg.missing_eos_score)  # EOS trick
    if cfg.score_clip is not None:
        scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
    # 3. per-token rewards: -beta * KL_t everywhere, + score on the last response token
    kl = kl_estimate(logprobs, full["ref_logprobs"], cfg.kl_estimator) * mask  # (N, R)
    rewards, non_score = kl_shaped_rewards(scores, kl, mask, beta)  # (N, R), (N, R)
    if cfg.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
    # 4. GAE (Schulman et al. 2016), advantages whitened over every response token of the batch
    advantages, returns = gae(rewards, values * mask, mask, cfg.gamma, cfg.lam)  # (N, R), (N, R)
    advantages = masked_whiten(advantages, mask) * mask
    non_score_total = non_score.sum(dim=1)  # (N,)
    metrics = {
        "objective/kl": float(kl.sum(dim=1).mean()),
        "objective/entropy": float(masked_sum(entropy, mask, dim=1).mean()),
        "objective/scores": float(scores.mean()),
        "objective/non_score_reward": float(non_score_total.mean()),
        "objective/rlhf_reward": float((scores + non_score_total).mean()),
        "val/explained_variance": float(explained_variance(values, returns, mask)),
        "val/mean": float(masked_mean(values, mask)),
        "policy/response_length": float(mask.sum(dim=1).mean()),
        "policy/eos_share": float(ended.float().mean()),
        "objective/beta": beta,
    }
    batch = {"seqs": seqs, "attn": attn, "mask": mask, "prompt_len": prompt_len, "logprobs": logprobs,
             "values": values, "advantages": advantages, "returns": returns}
    return batch, metrics


# ---------------------------------------------------------------- step 5: the PPO update
def trim_padding(batch: dict, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Rows `idx` without the columns that are padding in all of them: leading prompt padding and
    trailing response padding. Position ids come from the attention mask, so nothing else changes.
    Returns seqs (b, p + r), attn (b, p + r), p, r with p <= P, r <= R."""
    prompt_len = batch["prompt_len"]
    attn = batch["attn"][idx]  # (b, P + R)
    first = int(attn[:, :prompt_len].any(dim=0).long().argmax())  # first prompt column in use
    r_len = int(batch["mask"][idx].sum(dim=1).max())
    cols = slice(first, prompt_len + r_len)
    return batch["seqs"][idx][:, cols], attn[:, cols], prompt_len - first, r_len


def micro_step(cfg: PPOConfig, policy: Any, critic: Any, batch: dict, idx: torch.Tensor, num_tokens: float
               ) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """The loss of micro-batch `idx` as its share of the minibatch's `num_tokens` response tokens:
    (loss, share, its metrics as means over the micro-batch's tokens)."""
    seqs, attn, p_len, r_len = trim_padding(batch, idx)  # (b, p + r), (b, p + r), p, r
    mask = batch["mask"][idx, :r_len]  # (b, r)
    logprobs, entropy, values = response_forward(policy, critic, seqs, attn, p_len, cfg.temperature,
                                                 entropy_grad=cfg.entropy_coef != 0)
    frozen = {k: batch[k][idx, :r_len] for k in ("logprobs", "values", "advantages", "returns")}
    pg_loss, pg_m = ppo_policy_loss(logprobs, frozen["logprobs"], frozen["advantages"], mask, cfg.clip_eps, num_tokens)
    vf_loss, vf_m = ppo_value_loss(values, frozen["values"], frozen["returns"], mask, cfg.value_clip, num_tokens)
    entropy_term = masked_sum(entropy, mask) / num_tokens
    total = pg_loss + cfg.vf_coef * vf_loss - cfg.entropy_coef * entropy_term
    # metrics: token-weighted means over the minibatch (the losses are shares of it)
    share = float(mask.sum()) / num_tokens
    parts = {**pg_m, **vf_m, "loss/policy": pg_loss.detach() / share,
             "loss/value": vf_loss.detach() / share, "policy/entropy": entropy_term.detach() / share}
    return total, share, parts


def ppo_update(cfg: PPOConfig, policy: Any, critic: Any, opt_policy: Any, opt_value: Any, accelerator: Any,
               batch: dict, seed: int, guard: Callable[[dict[str, float]], bool] = lambda q: not nonfinite(q)
               ) -> list[dict[str, float]]:
    """K epochs over shuffled minibatches of the frozen batch (the order drawn from `seed`); one dict
    of metrics per optimizer step.

    Each minibatch is split into micro-batches whose losses are normalised by the minibatch's
    token count, so gradient accumulation equals one large-batch step (STYLE rule 8). With P
    processes each takes every P-th row of the minibatch and scales its loss by P, since DDP
    averages the gradients: the step and its metrics are those of one process.
    `guard` gets each step's `loss`, `grad_norm/policy` and `grad_norm/value` (before clipping) and
    says whether to apply it (default: when all are finite; `TrainingRun.guard` may also stop the
    stage); a step it refuses leaves both models and their optimizers as they were.
    """
    n, procs = batch["seqs"].shape[0], accelerator.num_processes
    order = torch.Generator().manual_seed(seed)
    policy.train()
    critic.train()
    stats: list[dict[str, float]] = []
    for _ in range(cfg.ppo_epochs):
        for mb in torch.randperm(n, generator=order).split(cfg.mini_batch_size):  # (mini_batch_size,) indices
            num_tokens = float(batch["mask"][mb].sum())  # the whole minibatch's, on every process
            sums: dict[str, float] = {}
            loss = 0.0
            micro = mb[accelerator.process_index::procs].split(cfg.micro_batch_size)
            for i, idx in enumerate(micro):
                with contextlib.ExitStack() as unsynced:  # DDP decides at the forward: sync on the last micro-batch
                    if i < len(micro) - 1:
                        for model in (policy, critic):
                            unsynced.enter_context(accelerator.no_sync(model))
                    total, share, parts = micro_step(cfg, policy, critic, batch, idx, num_tokens)
                    accelerator.backward(total * procs)
                loss += float(total.detach())
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * share
            if procs > 1:  # the shares of every process
                sums, loss = summed_over_processes(accelerator, sums, loss)
            norms = {f"grad_norm/{name}": float(accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
                     for name, model in (("policy", policy), ("value", critic))}
            sums.update(norms)
            apply = guard({"loss": loss, **norms})  # a NaN or infinite step never reaches the weights
            for opt in (opt_policy, opt_value):
                if apply:
                    opt.step()
                opt.zero_grad(set_to_none=True)
            stats.append(sums)
    policy.eval()
    critic.eval()
    return stats


# ---------------------------------------------------------------- the stage
def run_ppo(cfg: PPOConfig, paths: Paths) -> StageOutput:
    out_dir = paths.ppo / "model"
    if not cfg.enabled:  # a SKIPPED marker and no model: evaluation then leaves PPO out
        return skip_stage(paths.ppo, "ppo")

    # 0. runtime and models: policy/critic from the newest checkpoint of this config, else SFT/RM.
    #    The rollout runs under the same autocast as the update (fp32 by default, ppo.mixed_precision),
    #    so the ratio pi / pi_old is 1 on the first minibatch. P processes shard rollouts and minibatches.
    accelerator = make_accelerator(cfg.mixed_precision)
    for key in ("rollout_batch_size", "mini_batch_size"):
        if getattr(cfg, key) % accelerator.num_processes:
            raise UserError(f"ppo.{key}={getattr(cfg, key)} must divide by the {accelerator.num_processes} "
                            "processes, which shard it")
    seed_everything(cfg.seed)
    sft_dir, reward_dir = paths.sft / "model", paths.reward / "model"
    run = TrainingRun(paths.checkpoints("ppo"), [paths.rl_prompts, sft_dir, reward_dir], cfg, accelerator)
    ckpt = run.resume_dir
    tokenizer = load_tokenizer(sft_dir)
    #    With LoRA, a checkpoint holds only the adapters (and the critic's head): the bases are
    #    rebuilt from SFT and the reward model, and pi_ref is the policy with its adapter disabled.
    full_ckpt = ckpt is not None and not has_adapter(ckpt)
    policy = with_lora(load_causal_lm(ckpt if full_ckpt else sft_dir), cfg, ckpt)
    if full_ckpt:
        critic = RewardModel.from_pretrained(ckpt / VALUE_DIR)
    else:
        critic = with_reward_lora(make_critic(reward_dir, sft_dir, tokenizer, cfg.seed), cfg,
                                  ckpt / VALUE_DIR if ckpt is not None else None, HEAD_FILE)
    policy, critic = (with_activation_checkpointing(m, cfg.activation_checkpointing) for m in (policy, critic))
    if lora_enabled(cfg):
        reference = AdapterOff(policy)
    else:
        reference = load_causal_lm(sft_dir).requires_grad_(False).eval()
    reward_model = RewardModel.from_pretrained(reward_dir).requires_grad_(False).eval()
    #    on the device; FSDP (several processes, `fsdp: true`): all four models sharded, before the optimizers
    policy, critic, reference, reward_model = (shard(m, accelerator, cfg.fsdp) if isinstance(m, torch.nn.Module) else m
                                               for m in (policy, critic, reference, reward_model))
    prompts = [r["prompt"] for r in read_jsonl(paths.rl_prompts)]
    if len(prompts) < cfg.rollout_batch_size:
        raise UserError(f"ppo: {paths.rl_prompts} holds {len(prompts)} prompts, fewer than "
                        f"ppo.rollout_batch_size={cfg.rollout_batch_size}")

    opt_policy = optimizer_from(policy, cfg)
    opt_value = optimizer_from(critic, cfg, cfg.value_learning_rate)
    policy, opt_policy = prepare(accelerator, policy, opt_policy)
    critic, opt_value = prepare(accelerator, critic, opt_value)
    optimizers = {"policy": opt_policy, "value": opt_value}
    schedulers = {k: scheduler_from(o, cfg, cfg.max_steps) for k, o in optimizers.items()}  # per iteration
    kl_ctl = (AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.kl_horizon) if cfg.adaptive_kl
              else FixedKLController(cfg.beta))
    state = run.restore(optimizers, schedulers)
    if state.get("kl_ctl") is not None:
        kl_ctl.load_state_dict(state["kl_ctl"])
    history: list[dict[str, float]] = state["history"]
    order = BatchOrder(len(prompts), cfg.rollout_batch_size, cfg.seed)

    bar = progress_bar(cfg.max_steps, state["step"], "ppo", accelerator)
    for step in range(state["step"], cfg.max_steps):
        t0 = time.perf_counter()
        # 1-4. rollout, scores, KL-shaped rewards, GAE (all frozen)
        batch_prompts = [prompts[i] for i in order.batch(step)]
        with accelerator.autocast():
            batch, metrics = make_experience(
                cfg, transformers_model(accelerator.unwrap_model(policy)), reference, accelerator.unwrap_model(critic),
                reward_model, tokenizer, batch_prompts, kl_ctl.value, seed=cfg.seed * 100_003 + step,  # f(seed, step)
                accelerator=accelerator)
        t1 = time.perf_counter()
        # 5. K epochs of clipped updates; a non-finite score (the reward model's), loss or gradient
        #    norm stops the stage or skips that optimizer step (`ppo.nonfinite`)
        rollout = {k: metrics[k] for k in ("objective/scores", "objective/rlhf_reward")}
        fix = f"check the reward model in {reward_dir}" if nonfinite(rollout) else None
        stats = ppo_update(cfg, policy, critic, opt_policy, opt_value, accelerator, batch, row_seed(cfg.seed, step),
                           lambda q: run.guard(step + 1, {**rollout, **q}, fix))
        metrics["train/lr"] = schedulers["policy"].get_last_lr()[0]
        for sched in schedulers.values():
            advance(sched)  # also after an update whose every step was skipped
        # 6. log (update metrics averaged over its optimizer steps), adapt beta, checkpoint
        for key in stats[0]:
            metrics[key] = sum(s[key] for s in stats) / len(stats)
        metrics.update({"time/rollout_s": t1 - t0, "time/update_s": time.perf_counter() - t1,
                        "train/skipped_steps": run.skipped})
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
            run.log(history, {"step": step + 1, **metrics})
        kl_ctl.update(metrics["objective/kl"], cfg.rollout_batch_size)
        bar.update(1)
        bar.set_postfix(score=f"{metrics['objective/scores']:.2f}", kl=f"{metrics['objective/kl']:.2f}")
        critic_saved = saved_form(accelerator.unwrap_model(critic), HEAD_FILE)  # LoRA: its adapter and head
        run.checkpoint(step + 1, cfg.max_steps, {"": policy, VALUE_DIR: critic_saved}, optimizers, schedulers,
                       {"history": history, "kl_ctl": kl_ctl.state_dict()}, tokenizer)
    bar.close()

    # 7. the final policy + tokenizer, atomically (LoRA: merged, and the adapter if asked)
    finish_outputs(run, out_dir, policy, cfg, tokenizer)
    if accelerator.is_main_process:
        write_jsonl(paths.ppo / HISTORY, history)  # every iteration's statistics, beside the model
    last = history[-1] if history else {}
    keys = ("objective/kl", "objective/scores", "objective/rlhf_reward", "policy/eos_share", "policy/response_length",
            "train/skipped_steps")
    return StageOutput(
        metrics={"stage/enabled": 1.0, **{k: last[k] for k in keys if k in last}, "objective/beta": kl_ctl.value},
        history=history,
        inputs={"rl_prompts": paths.rl_prompts},
        reports=[paths.ppo / HISTORY],
        models={StageOutput.registered_name("ppo"): out_dir},
    )
