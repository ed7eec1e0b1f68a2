"""The `reward` stage: a Bradley-Terry reward model on the preference pairs.

Reads `paths.pref_train` / `paths.pref_heldout` (and a sample of `paths.sft_train` for the reward
normalisation), starts from the SFT model (or `cfg.model_path`), writes the model to
`paths.reward/"model"` and resumable checkpoints to `paths.checkpoints("reward")`.

The reward model encodes text with the backbone's own tokenizer when its directory has one (an
encoder such as all-MiniLM-L6-v2 then pools at [CLS]); otherwise with the project's tokenizer,
which must fit the backbone's embedding matrix.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from rlhf.config.reward import RewardConfig
from rlhf.errors import UserError
from rlhf.losses.reward import bradley_terry_loss
from rlhf.paths import Paths
from rlhf.reward.model import HEAD_FILE, RewardModel
from rlhf.stage import StageOutput, have
from rlhf.train import (
    BatchOrder,
    Throughput,
    collate_preference_batch,
    has_tokenizer,
    load_tokenizer,
    make_accelerator,
    optimizer_from,
    optimizer_step,
    pairs_in,
    progress_bar,
    read_jsonl,
    scheduler_from,
    seed_everything,
    shard_and_split,
    with_activation_checkpointing,
)
from rlhf.train.batching import pair_width, require_split
from rlhf.train.lora import finish_outputs, has_adapter, saved_form, with_reward_lora
from rlhf.train.loop import TrainingRun
from rlhf.train.sharding import prepare, shard


def heldout_metrics(model: RewardModel, rows: list[dict[str, Any]], batch_size: int) -> dict[str, float]:
    """Accuracy against the labels, and where the rows carry the embedded world's columns, against
    the gold ordering (ties skipped) and over the Bayes-optimal accuracy mean(max(p, 1 - p)) of a
    model that knows every pair's true preference probability `p_chosen`."""
    seqs = [model.encode(r["prompt"], r["chosen"]) for r in rows]
    seqs += [model.encode(r["prompt"], r["rejected"]) for r in rows]  # (2N,): chosen first
    chosen, rejected = model.raw_scores(seqs, batch_size).chunk(2)  # (N,), (N,)
    loss, m = bradley_terry_loss(chosen, rejected)
    wins = chosen > rejected  # (N,)
    accuracy = float(wins.float().mean())
    metrics = {
        "eval/rewards/accuracies": accuracy,
        "eval/loss/reward": float(loss),
        "eval/rewards/margins": float(m["rewards/margins"]),
    }
    if have(rows, "chosen_gold", "rejected_gold"):
        gold = [(i, r["chosen_gold"] > r["rejected_gold"]) for i, r in enumerate(rows)
                if r["chosen_gold"] != r["rejected_gold"]]
        metrics["eval/rewards/accuracies_gold"] = sum(bool(wins[i]) == g for i, g in gold) / max(len(gold), 1)
    if have(rows, "p_chosen"):
        bayes = sum(max(r["p_chosen"], 1.0 - r["p_chosen"]) for r in rows) / len(rows)
        metrics |= {"data/bayes_optimal_accuracy": bayes, "eval/rewards/accuracies_over_bayes": accuracy / bayes}
    return metrics


def project_tokenizer_for(cfg: RewardConfig, paths: Paths, source: Path) -> Any:
    """None when the backbone in `source` has its own tokenizer (the model uses that one), else the
    project's tokenizer, refused when its ids would index past the backbone's embedding rows."""
    if has_tokenizer(source):
        return None
    tokenizer = load_tokenizer(paths.tokenizer)
    rows = json.loads((source / "config.json").read_text(encoding="utf-8")).get("vocab_size")
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise ValueError(
            f"reward.model_path ({cfg.model_path or 'null: the SFT model'}): {source} has no tokenizer, and the "
            f"project's tokenizer ({len(tokenizer)} tokens) does not fit the backbone's embedding matrix "
            f"({rows} rows); save the backbone's own tokenizer in that directory")
    return tokenizer


def pair_rewards(model: Any, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw rewards (b,), (b,) of the chosen and the rejected sequences of a preference micro-batch
    from `collate_preference_batch`, in either layout."""
    if "score_index" in mb:  # shared-prefix rows: (b, 2) = [chosen, rejected] per row
        return model(mb["input_ids"], mb["attention_mask"], position_ids=mb["position_ids"],
                     score_index=mb["score_index"]).unbind(dim=1)
    return model(mb["input_ids"], mb["attention_mask"]).chunk(2)  # (2b,) = [chosen; rejected]


def run_reward(cfg: RewardConfig, paths: Paths) -> StageOutput:
    # 1. runtime: device, precision, seeds
    accelerator = make_accelerator(cfg.mixed_precision)
    require_split("reward", cfg.batch_size, cfg.micro_batch_size, accelerator.num_processes)
    seed_everything(cfg.seed)
    out_dir = paths.reward / "model"
    source = paths.user_path(cfg.model_path) if cfg.model_path else paths.sft / "model"

    # 2. model: the newest checkpoint of this config and these inputs, or a new head on the
    #    backbone (SFT by default)
    project_tokenizer = project_tokenizer_for(cfg, paths, source)
    inputs = [paths.pref_train, source] + ([paths.tokenizer] if project_tokenizer is not None else [])
    run = TrainingRun(paths.checkpoints("reward"), inputs, cfg, accelerator)
    if run.resume_dir is not None and not has_adapter(run.resume_dir):
        model = RewardModel.from_pretrained(run.resume_dir)
    else:  # with LoRA a checkpoint holds the adapter and the head: the backbone comes from `source`
        trust = cfg.trust_remote_code if cfg.model_path else None  # a model the user named, or the SFT output
        model = RewardModel.from_backbone(source, project_tokenizer, cfg.seed, cfg.max_seq_len, trust)
    if cfg.freeze_backbone:
        model.backbone.requires_grad_(False)
    model = with_reward_lora(model, cfg, run.resume_dir, HEAD_FILE)  # LoRA: adapter on the backbone, head trained
    model = with_activation_checkpointing(model, cfg.activation_checkpointing)
    model = shard(model, accelerator, cfg.fsdp)  # FSDP (several processes, `fsdp: true`): before the optimizer
    tokenizer = model.tokenizer
    share = cfg.share_prompt and model.shares_prefixes(cfg.max_seq_len)  # one row per pair, the prompt held once

    # 3. data: (chosen, rejected) token ids per pair in the one chat format, in the model's tokenizer
    train_rows, held_rows = read_jsonl(paths.pref_train), read_jsonl(paths.pref_heldout)
    pairs = [(model.encode(r["prompt"], r["chosen"]), model.encode(r["prompt"], r["rejected"])) for r in train_rows]
    if not pairs:
        raise UserError(f"reward: {paths.pref_train} holds no preference pairs")

    # 4. optimizer, schedule, and the rest of the training state when resuming
    optimizer = optimizer_from(model, cfg)
    scheduler = scheduler_from(optimizer, cfg, cfg.max_steps)
    model, optimizer = prepare(accelerator, model, optimizer)
    state = run.restore({"model": optimizer}, {"model": scheduler})
    history: list[dict[str, float]] = state["history"]
    order = BatchOrder(len(pairs), cfg.batch_size, cfg.seed,
                       [pair_width(c, r, share) for c, r in pairs] if cfg.group_by_length else None)

    def loss_fn(m: Any, mb: dict[str, torch.Tensor], num_pairs: float):
        return bradley_terry_loss(*pair_rewards(m, mb), cfg.margin, cfg.center_coef, num_pairs)

    # 5. training loop: global batch of pairs -> this process's micro-batches -> one optimizer step
    meter, recent = Throughput("pairs"), []
    model.train()
    bar = progress_bar(cfg.max_steps, state["step"], "reward", accelerator)
    for step in range(state["step"], cfg.max_steps):
        meter.start()
        parts = shard_and_split(order.batch(step), cfg.micro_batch_size, accelerator.process_index,
                                accelerator.num_processes)
        micro = [collate_preference_batch([pairs[i][0] for i in part], [pairs[i][1] for i in part],
                                          tokenizer.pad_token_id, share) for part in parts]
        stats = optimizer_step(model, optimizer, scheduler, accelerator, micro, loss_fn, pairs_in, cfg.max_grad_norm)
        run.guard(step + 1, {"loss": stats["loss"], "grad_norm": stats["grad_norm"]})  # NaN/inf: stop, or skip
        scored = sum(len(pairs[i][0]) + len(pairs[i][1]) for part in parts for i in part)  # tokens, both sequences
        meter.stop(tokens=scored * accelerator.num_processes, samples=cfg.batch_size)
        recent = (recent + [stats])[-cfg.log_every:]
        speed = meter.metrics()
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss/reward']:.3f}", acc=f"{stats['rewards/accuracies']:.2f}",
                        pairs_s=f"{speed['throughput/pairs_per_s']:.0f}")
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
            keys = ("loss/reward", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
            run.log(history, {"step": step + 1, **{k: sum(s[k] for s in recent) / len(recent) for k in keys},
                              "train/lr": stats["lr"], "train/grad_norm": stats["grad_norm"],
                              "train/skipped_steps": run.skipped, "train/epoch": order.epoch(step + 1),
                              "throughput/pairs_per_s": speed["throughput/pairs_per_s"]})
        saved = saved_form(accelerator.unwrap_model(model), HEAD_FILE)  # LoRA: the adapter and the head
        run.checkpoint(step + 1, cfg.max_steps, {"": saved}, {"model": optimizer}, {"model": scheduler},
                       {"history": history, "samples_seen": (step + 1) * cfg.batch_size})
    bar.close()

    # 6. held-out accuracy (every process scores the whole held-out set; it is small)
    rm: RewardModel = accelerator.unwrap_model(model)
    eval_batch = 2 * cfg.micro_batch_size
    with accelerator.autocast():
        metrics = heldout_metrics(rm, held_rows, eval_batch)

    # 7. reward normalisation: raw rewards of SFT demonstrations -> mean, std stored with the model
    #    (scored where the prepared model lives: raw_scores moves each batch to its device)
    demos = read_jsonl(paths.sft_train)
    demos = random.Random(cfg.seed).sample(demos, min(cfg.norm_examples, len(demos)))
    with accelerator.autocast():
        raw = rm.raw_scores([rm.encode(r["prompt"], r["response"]) for r in demos], eval_batch)
    rm.norm = {"mean": float(raw.mean()), "std": float(raw.std().clamp(min=1e-6)), "n": len(demos)}

    # 8. the final model directory, atomically (LoRA: merged, and the adapter if asked)
    finish_outputs(run, out_dir, rm, cfg, head_file=HEAD_FILE)

    # 9. what happened, for the task to write and log
    last = history[-1] if history else {}
    metrics.update({
        "loss/reward": float(last.get("loss/reward", float("nan"))),
        "rewards/accuracies": float(last.get("rewards/accuracies", float("nan"))),
        "reward_model/norm_mean": rm.norm["mean"],
        "reward_model/norm_std": rm.norm["std"],
        "train/epoch": order.epoch(cfg.max_steps),
        "train/skipped_steps": run.skipped,
        **meter.metrics(),
    })
    return StageOutput(
        metrics=metrics,
        history=history,
        inputs={"pref_train": paths.pref_train, "pref_heldout": paths.pref_heldout, "sft_train": paths.sft_train},
        models={StageOutput.registered_name("reward"): out_dir},
    )
