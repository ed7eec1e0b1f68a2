"""The `dpo` stage: direct preference optimisation of the SFT policy on pref_train.

The loss (Rafailov et al. 2023, eq. 7; conservative variant; IPO of Azar et al. 2023) lives in
`rlhf/losses/dpo.py`. What this file adds is the data path, which is where DPO implementations go
wrong: a sequence log-probability is the SUM over the response tokens (EOS included) of
log pi(y_t | x, y_<t), with the prompt tokens excluded (IPO, by default, divides it by the number of
those tokens: `dpo.logp_reduction`); chosen and rejected rows go through the model
in one forward pass (one row per pair holding the prompt once, or [chosen; rejected] on the batch
axis: docs/architecture.md, "Preference batch convention"); the reference
log-probabilities are computed once, before training, by the frozen SFT model.

Reads `paths.sft / "model"`, `paths.pref_train`, `paths.pref_heldout`; writes the policy and
tokenizer to `paths.dpo / "model"` and resumable checkpoints to `paths.checkpoints("dpo")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlhf.config.dpo import DPOConfig
from rlhf.errors import UserError
from rlhf.logprobs import pair_sequence_logprobs
from rlhf.losses.dpo import dpo_loss, ipo_loss
from rlhf.paths import Paths
from rlhf.stage import StageOutput, have, skip_stage
from rlhf.train import (
    BatchOrder,
    collate_preference_batch,
    collate_sft,
    encode_sft_example,
    length_order,
    load_causal_lm,
    load_tokenizer,
    make_accelerator,
    optimizer_from,
    optimizer_step,
    progress_bar,
    read_jsonl,
    scheduler_from,
    seed_everything,
    shard_and_split,
    with_activation_checkpointing,
)
from rlhf.train.batching import pair_width, require_split, shared_pair_targets, shares_prefixes
from rlhf.train.lora import AdapterOff, finish_outputs, has_adapter, lora_enabled, with_lora
from rlhf.train.loop import TrainingRun
from rlhf.train.models import max_positions
from rlhf.train.sharding import prepare, shard


def encode_pairs(tokenizer: Any, rows: list[dict[str, Any]], max_len: int) -> list[tuple[dict, dict]]:
    """Each pair -> (chosen, rejected) examples with `input_ids` and `loss_mask` (1 on response + EOS)."""
    return [
        (encode_sft_example(tokenizer, r["prompt"], r["chosen"], max_len),
         encode_sft_example(tokenizer, r["prompt"], r["rejected"], max_len))
        for r in rows
    ]


def collate_pairs(pairs: list[tuple[dict, dict]], pad_id: int, share: bool = False) -> dict[str, torch.Tensor]:
    """B pairs -> a micro-batch for `pair_sequence_logprobs`: with `share`, one row per pair that
    holds the prompt once (`collate_preference_batch` decides whether that saves tokens); else
    input_ids, attention_mask, loss_mask of shape (2B, T), rows [c0..c_{B-1}, r0..r_{B-1}]. Both
    carry `lengths` (2B,): the response tokens of each sequence, [chosen; rejected]."""
    chosen, rejected = [c for c, _ in pairs], [r for _, r in pairs]
    if share:
        batch = collate_preference_batch([c["input_ids"] for c in chosen], [r["input_ids"] for r in rejected],
                                         pad_id, share=True)
        if "score_index" in batch:
            del batch["score_index"]
            return {**batch, **shared_pair_targets(chosen, rejected)}
    batch = collate_sft(chosen + rejected, pad_id)
    batch["lengths"] = batch["loss_mask"].sum(dim=1).float()  # (2B,)
    return batch


@torch.no_grad()
def pair_logprobs(model: Any, pairs: list[tuple[dict, dict]], pad_id: int, batch_size: int,
                  device: Any, only: Sequence[int] | None = None, share: bool = False) -> torch.Tensor:
    """Summed response log-probs of every pair (or of the pairs `only`; the others stay 0) under
    `model`, batched in order of length (little padding), the prompt held once when `share`.
    Returns (N, 2): [chosen, rejected], in the pairs' order."""
    out = torch.zeros(len(pairs), 2)
    wanted = sorted(set(only)) if only is not None else list(range(len(pairs)))
    by_length = length_order([max(len(pairs[j][0]["input_ids"]), len(pairs[j][1]["input_ids"])) for j in wanted])
    order = [wanted[k] for k in by_length]
    for i in range(0, len(order), batch_size):
        idx = order[i: i + batch_size]
        mb = {k: v.to(device) for k, v in collate_pairs([pairs[j] for j in idx], pad_id, share).items()}
        logps = pair_sequence_logprobs(model, mb)  # (2b,)
        out[torch.tensor(idx)] = torch.stack(logps.float().cpu().chunk(2), dim=1)  # (b, 2)
    return out


def pair_lengths(pairs: list[tuple[dict, dict]]) -> torch.Tensor:
    """Response tokens (EOS included) of every pair. Returns (N, 2): [chosen, rejected]."""
    return torch.tensor([[sum(c["loss_mask"]), sum(r["loss_mask"])] for c, r in pairs], dtype=torch.float)


def reduce_logps(cfg: DPOConfig, summed: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Summed response log-probs -> what the loss compares: the sums (DPO), or the per-token means
    (IPO by default: its regression target 1 / (2 tau) is set for length-averaged log-ratios, so a
    tau tuned elsewhere transfers and long responses are not pulled harder). Any shape, elementwise."""
    return summed / lengths if cfg.average_logps else summed


def preference_loss(cfg: DPOConfig, policy: torch.Tensor, reference: torch.Tensor, num_pairs: float):
    """policy, reference: (2B,) log-probs after `reduce_logps`, [chosen; rejected]. Returns (loss, metrics)."""
    pc, pr = policy.chunk(2)
    rc, rr = reference.chunk(2)
    if cfg.loss_type == "ipo":
        return ipo_loss(pc, pr, rc, rr, cfg.beta, num_pairs=num_pairs)
    return dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing, num_pairs=num_pairs)


def micro_batch_loss(cfg: DPOConfig, model: Any, reference: Any, mb: dict[str, torch.Tensor], num_pairs: float):
    """This micro-batch's share of the step's preference loss (`collate_pairs` of either layout):
    log pi of both sequences, log pi_ref from `mb["ref_logps"]` (precomputed) or from `reference`,
    reduced per `dpo.logp_reduction`. Returns (loss, metrics)."""
    logps = pair_sequence_logprobs(model, mb)  # (2b,) [chosen; rejected]
    if "ref_logps" in mb:
        ref = mb["ref_logps"]  # (2b,)
    else:
        with torch.no_grad():
            ref = pair_sequence_logprobs(reference, mb)
    lengths = mb["lengths"]  # (2b,)
    return preference_loss(cfg, reduce_logps(cfg, logps, lengths), reduce_logps(cfg, ref, lengths), num_pairs)


def heldout_metrics(cfg: DPOConfig, policy: torch.Tensor, reference: torch.Tensor,
                    rows: list[dict]) -> dict[str, float]:
    """Implicit-reward accuracy on pref_heldout: against the rater labels (chosen is right) and
    against the gold ordering (pairs with equal gold utility left out). policy, reference: (N, 2)
    log-probs after `reduce_logps`, the quantities the loss compares."""
    rewards = cfg.beta * (policy - reference)  # (N, 2) implicit rewards r_hat
    margin = rewards[:, 0] - rewards[:, 1]  # (N,)
    metrics = {
        "eval/rewards/accuracies": float((margin > 0).float().mean()),
        "eval/rewards/margins": float(margin.mean()),
        "eval/rewards/chosen": float(rewards[:, 0].mean()),
        "eval/rewards/rejected": float(rewards[:, 1].mean()),
    }
    if have(rows, "chosen_gold", "rejected_gold"):  # the embedded world's gold utilities
        gold = torch.tensor([r["chosen_gold"] - r["rejected_gold"] for r in rows])  # (N,)
        decided = gold != 0
        agree = (margin > 0) == (gold > 0)
        if decided.any():
            metrics["eval/rewards/accuracies_gold"] = float(agree[decided].float().mean())
    return metrics


def run_dpo(cfg: DPOConfig, paths: Paths) -> StageOutput:
    out_dir = paths.dpo / "model"
    if not cfg.enabled:  # a SKIPPED marker and no model: evaluation then leaves DPO out
        return skip_stage(paths.dpo, "dpo")

    # 1. runtime; policy from the newest checkpoint of this config or from SFT; reference = SFT
    accelerator = make_accelerator(cfg.mixed_precision)
    require_split("dpo", cfg.batch_size, cfg.micro_batch_size, accelerator.num_processes)
    seed_everything(cfg.seed)
    sft_dir = paths.sft / "model"
    run = TrainingRun(paths.checkpoints("dpo"), [paths.pref_train, sft_dir], cfg, accelerator)
    tokenizer = load_tokenizer(sft_dir)
    resume = run.resume_dir
    policy = load_causal_lm(resume if resume is not None and not has_adapter(resume) else sft_dir)
    if lora_enabled(cfg):  # pi_ref = the SFT weights under the adapter, switched off: no second copy
        policy = with_lora(policy, cfg, resume).to(accelerator.device)
        reference = AdapterOff(policy)
    else:  # on the device, sharded too with `fsdp`: a frozen copy as large as the policy
        reference = shard(load_causal_lm(sft_dir).eval().requires_grad_(False), accelerator, cfg.fsdp)
    policy = with_activation_checkpointing(policy, cfg.activation_checkpointing)
    policy = shard(policy, accelerator, cfg.fsdp)  # FSDP (several processes, `fsdp: true`): before the optimizer

    # 2. data: prompt + chosen / prompt + rejected token ids, loss mask on the response tokens
    max_len = min(cfg.max_seq_len, max_positions(policy.config))
    train_rows, held_rows = read_jsonl(paths.pref_train), read_jsonl(paths.pref_heldout)[: cfg.eval_pairs]
    train, held = encode_pairs(tokenizer, train_rows, max_len), encode_pairs(tokenizer, held_rows, max_len)
    pad_id = tokenizer.pad_token_id

    steps_per_epoch = len(train) // cfg.batch_size
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    if total_steps <= 0:
        raise UserError(f"dpo: pref_train has {len(train)} pairs, fewer than dpo.batch_size={cfg.batch_size}")
    share = cfg.share_prompt and shares_prefixes(policy, cfg.max_seq_len)  # a pair in one row, its prompt held once
    widths = [pair_width(c["input_ids"], r["input_ids"], share) for c, r in train] if cfg.group_by_length else None
    order = BatchOrder(len(train), cfg.batch_size, cfg.seed, widths)

    # 3. reference log-probs, once: (N, 2) summed over response tokens, of the training pairs the
    #    run's steps visit (recomputed on resume: the frozen reference makes them a pure function of
    #    the data), under the same autocast as training, so that the first step starts at pi = pi_ref
    ref_train = None
    with accelerator.autocast():
        if cfg.precompute_ref_logprobs:
            visited = [i for step in range(total_steps) for i in order.batch(step)]
            ref_train = pair_logprobs(reference, train, pad_id, cfg.eval_batch_size, accelerator.device, visited,
                                      share=share)
        ref_held = pair_logprobs(reference, held, pad_id, cfg.eval_batch_size, accelerator.device, share=share)

    # 4. optimizer, schedule, state when resuming
    optimizer = optimizer_from(policy, cfg)
    scheduler = scheduler_from(optimizer, cfg, total_steps)
    policy, optimizer = prepare(accelerator, policy, optimizer)
    state = run.restore({"policy": optimizer}, {"policy": scheduler})
    history: list[dict[str, float]] = state["history"]

    def loss_fn(model: Any, mb: dict[str, torch.Tensor], num_pairs: float):
        return micro_batch_loss(cfg, model, reference, mb, num_pairs)

    def micro_batch(idx: list[int]) -> dict[str, torch.Tensor]:
        mb = collate_pairs([train[i] for i in idx], pad_id, share)
        if ref_train is not None:
            mb["ref_logps"] = torch.cat([ref_train[idx, 0], ref_train[idx, 1]])  # (2b,) [chosen; rejected]
        return mb

    # 5. training: one optimizer step per batch of pairs, loss normalised over the whole step
    policy.train()
    bar = progress_bar(total_steps, state["step"], "dpo", accelerator)
    for step in range(state["step"], total_steps):
        parts = shard_and_split(order.batch(step), cfg.micro_batch_size, accelerator.process_index,
                                accelerator.num_processes)
        stats = optimizer_step(policy, optimizer, scheduler, accelerator, [micro_batch(p) for p in parts],
                               loss_fn, lambda mb: len(mb["lengths"]) // 2, cfg.max_grad_norm)
        run.guard(step + 1, {"loss": stats["loss"], "grad_norm": stats["grad_norm"]})  # NaN/inf: stop, or skip
        if (step + 1) % cfg.log_every == 0 or step + 1 == total_steps:
            run.log(history, {"step": step + 1, "train/epoch": order.epoch(step + 1), "train/lr": stats["lr"],
                              "train/grad_norm": stats["grad_norm"], "train/skipped_steps": run.skipped,
                              **{k: v for k, v in stats.items() if k not in ("loss", "lr", "grad_norm")}})
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss/dpo']:.3f}", acc=f"{stats['rewards/accuracies']:.2f}")
        run.checkpoint(step + 1, total_steps, {"": policy}, {"policy": optimizer}, {"policy": scheduler},
                       {"history": history}, tokenizer)
    bar.close()

    # 6. held-out implicit-reward accuracy
    model = accelerator.unwrap_model(policy).eval()
    with accelerator.autocast():
        held_policy = pair_logprobs(model, held, pad_id, cfg.eval_batch_size, accelerator.device, share=share)
    held_len = pair_lengths(held)  # (N, 2)
    metrics = {"stage/enabled": 1.0, **heldout_metrics(cfg, reduce_logps(cfg, held_policy, held_len),
                                                 reduce_logps(cfg, ref_held, held_len), held_rows)}
    last = history[-1] if history else {}
    metrics.update({k: last[k] for k in ("loss/dpo", "rewards/accuracies", "rewards/margins") if k in last})
    metrics["train/skipped_steps"] = run.skipped

    # 7. the final policy + tokenizer, atomically (LoRA: merged, and the adapter if asked);
    #    checkpoints are no longer needed
    finish_outputs(run, out_dir, model, cfg, tokenizer)
    return StageOutput(
        metrics=metrics,
        history=history,
        inputs={"pref_train": paths.pref_train, "pref_heldout": paths.pref_heldout},
        models={StageOutput.registered_name("dpo"): out_dir},
    )
