"""The `sft` stage: supervised fine-tuning on the demonstrations, loss on response tokens only.

Reads `paths.sft_train` / `paths.sft_heldout`, writes the model + tokenizer to `paths.sft/"model"`
and resumable checkpoints to `paths.checkpoints("sft")`. A run killed at any point and started again
with the same config resumes from its newest checkpoint and ends with the same weights.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch

from rlhf.config.sft import SFTConfig
from rlhf.errors import UserError
from rlhf.losses.sft import first_scored_position, sft_loss, shifted_token_logprobs
from rlhf.ops import masked_sum
from rlhf.paths import Paths
from rlhf.stage import StageOutput
from rlhf.train import (
    BatchOrder,
    Throughput,
    build_gpt2,
    collate_sft,
    encode_sft_example,
    has_tokenizer,
    load_causal_lm,
    load_tokenizer,
    make_accelerator,
    optimizer_from,
    optimizer_step,
    pack_examples,
    progress_bar,
    read_jsonl,
    scheduler_from,
    seed_everything,
    shard_and_split,
    with_activation_checkpointing,
)
from rlhf.train.batching import model_attention_mask, require_split
from rlhf.train.last_mlp import read_from
from rlhf.train.lora import finish_outputs, has_adapter, with_lora
from rlhf.train.loop import TrainingRun
from rlhf.train.sharding import lockstep, prepare, shard


def micro_batch_loss(model: Any, mb: dict[str, torch.Tensor], num_tokens: float):
    """This micro-batch's share of the step's SFT loss (the `loss_fn` of `optimizer_step`)."""
    # packed rows bring a (b, 1, T, T) block-diagonal mask and per-example position_ids
    s = first_scored_position(mb["loss_mask"])  # the LM head and the last MLP run on positions [s, T) only
    with read_from(model, s):
        logits = model(input_ids=mb["input_ids"], attention_mask=model_attention_mask(model, mb["attention_mask"]),
                       position_ids=mb.get("position_ids"), use_cache=False,
                       **kept_logits(mb["input_ids"].shape[1], s)).logits
    return sft_loss(logits, mb["input_ids"][:, s:], mb["loss_mask"][:, s:], num_tokens)  # logits (b, T-s, V)


def kept_logits(length: int, first: int) -> dict[str, int]:
    """The model kwargs that limit its logits to positions [first, length) (none when first is 0)."""
    return {"logits_to_keep": length - first} if first else {}


def loss_tokens(mb: dict[str, torch.Tensor]) -> int:
    """Loss tokens of a micro-batch (the `units` of `optimizer_step`)."""
    return int(mb["loss_mask"][:, 1:].sum())  # targets are tokens 1..T-1


@torch.no_grad()
def evaluate_loss(model: Any, examples: list[dict[str, list[int]]], pad_id: int, micro_batch_size: int,
                  accelerator: Any) -> float:
    """Mean NLL per response token over `examples` (all processes together)."""
    model.eval()
    sums = torch.zeros(2, device=accelerator.device)  # [sum of NLL, number of tokens]
    for rows in lockstep(examples, micro_batch_size, accelerator.process_index, accelerator.num_processes):
        # a process whose share ran out runs a stand-in row, weighted 0: FSDP's forward is a collective
        mb = {k: v.to(accelerator.device) for k, v in collate_sft(rows or examples[:1], pad_id).items()}
        s = first_scored_position(mb["loss_mask"])
        with accelerator.autocast(), read_from(model, s):  # unpacked: a (b, T) padding mask, made causal
            logits = model(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], use_cache=False,
                           **kept_logits(mb["input_ids"].shape[1], s)).logits  # (b, T-s, V)
        mask = mb["loss_mask"][:, s + 1:]  # (b, T-s-1)
        nll = -shifted_token_logprobs(logits, mb["input_ids"][:, s:])
        sums += torch.stack([masked_sum(nll, mask), mask.sum().float()]) * bool(rows)
    model.train()
    sums = accelerator.reduce(sums, reduction="sum") if accelerator.num_processes > 1 else sums
    return float(sums[0] / sums[1].clamp(min=1))


def run_sft(cfg: SFTConfig, paths: Paths) -> StageOutput:
    # 1. runtime: device, precision, seeds
    accelerator = make_accelerator(cfg.mixed_precision)
    require_split("sft", cfg.batch_size, cfg.micro_batch_size, accelerator.num_processes)
    seed_everything(cfg.seed)
    out_dir = paths.sft / "model"
    source = paths.user_path(cfg.model_path) if cfg.model_path else None

    # 2. model and tokenizer: the newest checkpoint of this config and these inputs, a local model,
    #    or a new GPT-2; with LoRA, an adapter on it (a checkpoint then holds only the adapter)
    tokenizer_dir = source if source is not None and has_tokenizer(source) else paths.tokenizer
    inputs = [paths.sft_train, tokenizer_dir, *([source] if source and source != tokenizer_dir else [])]
    run = TrainingRun(paths.checkpoints("sft"), inputs, cfg, accelerator)
    ckpt = run.resume_dir
    trust = cfg.trust_remote_code if source is not None else None  # the model the user named
    tokenizer = load_tokenizer(ckpt) if ckpt else load_tokenizer(tokenizer_dir, trust if tokenizer_dir == source else None)
    if ckpt is not None and not has_adapter(ckpt):
        model = load_causal_lm(ckpt)  # its config records the trust (rlhf.train.remote_code)
    elif source is not None:
        model = load_causal_lm(source, cfg.trust_remote_code)
    else:
        model = build_gpt2(tokenizer, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_positions, cfg.seed)
    model = with_activation_checkpointing(with_lora(model, cfg, resume=ckpt), cfg.activation_checkpointing)
    model = shard(model, accelerator, cfg.fsdp)  # FSDP (several processes, `fsdp: true`): before the optimizer

    # 3. data: chat-format token ids with a response-only loss mask; packed rows if asked
    train_rows, held_rows = read_jsonl(paths.sft_train), read_jsonl(paths.sft_heldout)
    train = [encode_sft_example(tokenizer, r["prompt"], r["response"], cfg.max_seq_len) for r in train_rows]
    held = [encode_sft_example(tokenizer, r["prompt"], r["response"], cfg.max_seq_len) for r in held_rows]
    rng = random.Random(cfg.seed)
    train_eval = rng.sample(train, min(cfg.eval_examples, len(train)))  # before packing: per-example loss
    held_eval = rng.sample(held, min(cfg.eval_examples, len(held)))
    if cfg.packing:
        train = pack_examples(rng.sample(train, len(train)), cfg.max_seq_len)  # shuffled, then packed
    if not train:
        raise UserError(f"sft: {paths.sft_train} holds no training examples")

    # 4. optimizer, schedule, and the rest of the training state when resuming
    optimizer = optimizer_from(model, cfg)
    scheduler = scheduler_from(optimizer, cfg, cfg.max_steps)
    model, optimizer = prepare(accelerator, model, optimizer)
    state = run.restore({"model": optimizer}, {"model": scheduler})
    history: list[dict[str, float]] = state["history"]
    order = BatchOrder(len(train), cfg.batch_size, cfg.seed,
                       [len(e["input_ids"]) for e in train] if cfg.group_by_length else None)

    # 5. training loop: global batch -> this process's micro-batches -> one optimizer step
    meter, last = Throughput("dialogues"), {}
    model.train()
    bar = progress_bar(cfg.max_steps, state["step"], "sft", accelerator)
    for step in range(state["step"], cfg.max_steps):
        meter.start()
        parts = shard_and_split(order.batch(step), cfg.micro_batch_size, accelerator.process_index,
                                accelerator.num_processes)
        micro = [collate_sft([train[i] for i in part], tokenizer.pad_token_id) for part in parts]
        last = optimizer_step(model, optimizer, scheduler, accelerator, micro, micro_batch_loss, loss_tokens,
                              cfg.max_grad_norm)
        run.guard(step + 1, {"loss": last["loss"], "grad_norm": last["grad_norm"]})  # NaN/inf: stop, or skip
        rows = [train[i] for part in parts for i in part]
        meter.stop(tokens=sum(len(r["input_ids"]) for r in rows) * accelerator.num_processes,
                   samples=sum(r["segment_ids"][-1] + 1 if "segment_ids" in r else 1 for r in rows)
                   * accelerator.num_processes)  # dialogues, also inside packed rows
        speed = meter.metrics()
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss/sft']:.3f}", tok_s=f"{speed['throughput/tokens_per_s']:.0f}")
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
            run.log(history, {"step": step + 1, "loss/sft": last["loss/sft"], "train/lr": last["lr"],
                              "train/grad_norm": last["grad_norm"], "train/epoch": order.epoch(step + 1),
                              "train/skipped_steps": run.skipped,
                              "throughput/tokens_per_s": speed["throughput/tokens_per_s"]})
        run.checkpoint(step + 1, cfg.max_steps, {"": model}, {"model": optimizer}, {"model": scheduler},
                       {"history": history, "samples_seen": (step + 1) * cfg.batch_size}, tokenizer)
    bar.close()

    # 6. losses on per-example (unpacked) data, train sample and held-out
    eval_batch = 4 * cfg.micro_batch_size  # no activations kept for backward: larger batches fit
    train_loss = evaluate_loss(model, train_eval, tokenizer.pad_token_id, eval_batch, accelerator)
    held_loss = evaluate_loss(model, held_eval, tokenizer.pad_token_id, eval_batch, accelerator)

    # 7. the final model + tokenizer, atomically (LoRA: merged, and the adapter if asked)
    finish_outputs(run, out_dir, model, cfg, tokenizer)

    # 8. what happened, for the task to write and log; gold-judged samples of the saved model are
    #    evaluation's (rlhf/stages/sft_samples.py, run by the task), never training code's
    metrics: dict[str, float] = {
        "eval/loss/sft": held_loss,
        "eval/loss/sft_train": train_loss,
        "eval/perplexity/sft": math.exp(min(held_loss, 50.0)),
        "eval/perplexity/sft_train": math.exp(min(train_loss, 50.0)),
        # of the last optimizer step (resumed from the final checkpoint: the history's last row)
        "loss/sft": float(last.get("loss/sft", history[-1]["loss/sft"] if history else math.nan)),
        "train/epoch": order.epoch(cfg.max_steps),
        "train/skipped_steps": run.skipped,
        **meter.metrics(),
    }
    return StageOutput(
        metrics=metrics,
        history=history,
        inputs={"sft_train": paths.sft_train, "sft_heldout": paths.sft_heldout},
        models={StageOutput.registered_name("sft"): out_dir},
    )

