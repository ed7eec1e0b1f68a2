"""The `ppo` stage: PPO against the reward model with a per-token KL penalty to the SFT policy.

One iteration, as Ziegler et al. (2019) and Ouyang et al. (2022) define it, with the details of
Huang et al. (2024, "The N+ implementation details of RLHF with PPO"):
  1. rollout   sample N prompts; the policy answers with the KV cache (temperature T, top-p),
               each prompt from its own random stream; everything after the first EOS is cut
  2. evaluate  one teacher-forced pass each (no gradient): log pi_old and V_old (policy, critic,
               logits / T), log pi_ref (frozen SFT); the reward model scores the decoded text,
               re-encoded with its own tokenizer; a response without EOS gets a fixed score.
               The rows of step 5's first minibatch take log pi_old and V_old from that minibatch's
               own forward instead, run here at the same weights (rlhf/stages/ppo_update.py)
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

Step 5 and the forward passes of steps 2 and 5 live in rlhf/stages/ppo_update.py.

Models: policy and reference from `paths.sft / "model"`; reward model from `paths.reward / "model"`;
critic initialised from the reward model (backbone + head applied at every token). Writes the
policy + tokenizer to `paths.ppo / "model"` and resumable checkpoints to `paths.checkpoints("ppo")`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from rlhf.config.ppo import PPOConfig
from rlhf.errors import UserError
from rlhf.files import write_jsonl
from rlhf.generation import generate, row_seed
from rlhf.losses.ppo import explained_variance
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
from rlhf.stages.ppo_update import FirstMinibatch, ppo_update, response_forward
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
from rlhf.train.loop import TrainingRun
from rlhf.train.optim import advance, nonfinite
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


def evaluate_rows(policy: Any, critic: Any, seqs: torch.Tensor, attn: torch.Tensor, prompt_len: int,
                  temperature: float, skip: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 2's policy and critic pass (`response_forward`) over this process's n rows but `skip`,
    whose entries are left at 0 in float32 for `FirstMinibatch.run` to fill. Shapes: (n, P + R) ->
    (n, R) x 3."""
    if skip is None:
        return response_forward(policy, critic, seqs, attn, prompt_len, temperature)
    keep = torch.ones(seqs.shape[0], dtype=torch.bool, device=seqs.device)
    keep[skip] = False
    out = tuple(torch.zeros(seqs.shape[0], seqs.shape[1] - prompt_len, device=seqs.device) for _ in range(3))
    if keep.any():
        for full, part in zip(out, response_forward(policy, critic, seqs[keep], attn[keep], prompt_len, temperature)):
            full[keep] = part.float()
    return out


@torch.no_grad()
def make_experience(cfg: PPOConfig, policy: Any, reference: Any, critic: Any, reward_model: RewardModel,
                    tokenizer: Any, prompts: list[str], beta: float, seed: int, accelerator: Any,
                    first: FirstMinibatch | None = None) -> tuple[dict, dict[str, float]]:
    """Sample, score and shape one batch of N prompts. This process samples and evaluates its shard
    (rows [r * N / P, (r + 1) * N / P) of P processes), each prompt from its own random stream
    `row_seed(seed, row)`; steps 3-4 run on the gathered batch. Returns frozen tensors of the whole
    batch for the update, and the rollout metrics. `first`: the update's first minibatch, whose
    forward gives its rows' log pi_old, V_old and entropy instead of the evaluation pass."""
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
    # 2. frozen log-probs and values from teacher-forced passes (but at the rows of `first`, which
    #    its forward fills in after the gather); scores through text
    skip = None if first is None else first.rows[(first.rows >= rows.start) & (first.rows < rows.stop)] - rows.start
    logprobs, entropy, values = evaluate_rows(policy, critic, seqs, attn, prompt_len, cfg.temperature, skip)
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
    if first is not None:  # in place: logprobs, entropy and values are the gathered tensors
        first.run({"seqs": seqs, "attn": attn, "mask": mask, "prompt_len": prompt_len,
                   "logprobs": logprobs, "entropy": entropy, "values": values})
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
        update_seed = row_seed(cfg.seed, step)
        first = FirstMinibatch.plan(cfg, policy, critic, accelerator, len(batch_prompts), update_seed)
        with accelerator.autocast():
            batch, metrics = make_experience(
                cfg, transformers_model(accelerator.unwrap_model(policy)), reference, accelerator.unwrap_model(critic),
                reward_model, tokenizer, batch_prompts, kl_ctl.value, seed=cfg.seed * 100_003 + step,  # f(seed, step)
                accelerator=accelerator, first=first)
        t1 = time.perf_counter()
        # 5. K epochs of clipped updates; a non-finite score (the reward model's), loss or gradient
        #    norm stops the stage or skips that optimizer step (`ppo.nonfinite`)
        rollout = {k: metrics[k] for k in ("objective/scores", "objective/rlhf_reward")}
        fix = f"check the reward model in {reward_dir}" if nonfinite(rollout) else None
        stats = ppo_update(cfg, policy, critic, opt_policy, opt_value, accelerator, batch, update_seed,
                           lambda q: run.guard(step + 1, {**rollout, **q}, fix), first)
        metrics["train/lr"] = schedulers["policy"].get_last_lr()[0]
        for sched in schedulers.values():
            advance(sched)  # also after an update whose every step was skipped
        # 6. log (update metrics averaged over its optimizer steps), adapt beta, checkpoint
        for key in stats[0]:
            metrics[key] = sum(s[key] for s in stats) / len(stats)
        metrics["policy/first_ratio"] = stats[0]["policy/ratio"]  # pi / pi_old before any step: 1 (a check)
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
