"""Throughput of the SFT and reward-model training steps on this machine.

    python benchmarks/bench_sft_reward.py [--steps 20] [--params params.yaml]

Uses the `sft` and `reward` sections of params.yaml (model size, batch sizes, sequence length) and
the pipeline's data and tokenizer when `artifacts/` has them, else the toy world in a temporary
folder. Times optimizer steps only (after 2 warm-up steps) and prints SFT tokens/s and reward
pairs/s. Nothing under artifacts/ is written.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from rlhf.config import load_config
from rlhf.losses.reward import bradley_terry_loss
from rlhf.paths import Paths
from rlhf.reward.model import RewardModel
from rlhf.stages.sft import loss_tokens, micro_batch_loss
from rlhf.train import (
    BatchOrder,
    build_gpt2,
    build_optimizer,
    collate_pairs,
    collate_sft,
    encode_sft_example,
    load_tokenizer,
    make_accelerator,
    optimizer_step,
    pack_examples,
    read_jsonl,
    shard_and_split,
)
from rlhf.train.runtime import quiet_transformers
from rlhf.train.toy import make_toy_world


def timed_steps(steps: int, run_step) -> float:
    for s in range(2):  # warm-up: allocator, kernels
        run_step(s)
    t0 = time.perf_counter()
    for s in range(2, 2 + steps):
        run_step(s)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per benchmark")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    sft_cfg, rm_cfg = load_config("sft", args.params), load_config("reward", args.params)
    tmp = tempfile.TemporaryDirectory()
    paths = Paths(Path("."))
    if not (paths.sft_train.is_file() and paths.pref_train.is_file() and paths.tokenizer.is_dir()):
        paths = make_toy_world(tmp.name, n_sft=256, n_pref=256)
    tok = load_tokenizer(paths.tokenizer)
    acc = make_accelerator(sft_cfg.mixed_precision)
    print(f"device={acc.device} threads={torch.get_num_threads()} data={paths.data}")

    # SFT: packed (or padded) rows of the demonstrations, the stage's own loss function
    model = build_gpt2(tok, sft_cfg.n_layer, sft_cfg.n_head, sft_cfg.n_embd, sft_cfg.n_positions, sft_cfg.seed)
    opt = build_optimizer(model, sft_cfg.learning_rate)
    model, opt = acc.prepare(model, opt)
    rows = read_jsonl(paths.sft_train)
    exs = [encode_sft_example(tok, r["prompt"], r["response"], sft_cfg.max_seq_len) for r in rows]
    exs = pack_examples(exs, sft_cfg.max_seq_len) if sft_cfg.packing else exs
    order = BatchOrder(len(exs), sft_cfg.batch_size, 0)
    counted = {"tokens": 0}

    def sft_step(step: int) -> None:
        parts = shard_and_split(order.batch(step), sft_cfg.micro_batch_size)
        micro = [collate_sft([exs[i] for i in p], tok.pad_token_id) for p in parts]
        optimizer_step(model, opt, None, acc, micro, micro_batch_loss, loss_tokens, 1.0)
        if step >= 2:
            counted["tokens"] += sum(len(exs[i]["input_ids"]) for p in parts for i in p)

    seconds = timed_steps(args.steps, sft_step)
    print(f"sft: {counted['tokens'] / seconds:,.0f} tokens/s  {args.steps * sft_cfg.batch_size / seconds:,.1f} "
          f"rows/s  ({seconds / args.steps:.3f} s/step, batch {sft_cfg.batch_size} rows of <= {sft_cfg.max_seq_len})")

    # reward model: the SFT-sized backbone with a scalar head, chosen and rejected in one pass
    backbone_dir = Path(tmp.name) / "backbone"
    with quiet_transformers():
        acc.unwrap_model(model).save_pretrained(backbone_dir)
    rm = RewardModel.from_backbone(backbone_dir, tok, seed=0, max_seq_len=rm_cfg.max_seq_len)
    opt = build_optimizer(rm, rm_cfg.learning_rate)
    rm, opt = acc.prepare(rm, opt)
    encode = acc.unwrap_model(rm).encode
    pairs = [(encode(r["prompt"], r["chosen"]), encode(r["prompt"], r["rejected"])) for r in read_jsonl(paths.pref_train)]
    order = BatchOrder(len(pairs), rm_cfg.batch_size, 0)

    def rm_loss(m, mb, n):
        chosen, rejected = m(mb["input_ids"], mb["attention_mask"]).chunk(2)
        return bradley_terry_loss(chosen, rejected, num_pairs=n)

    def rm_step(step: int) -> None:
        parts = shard_and_split(order.batch(step), rm_cfg.micro_batch_size)
        micro = [collate_pairs([pairs[i][0] for i in p], [pairs[i][1] for i in p], tok.pad_token_id) for p in parts]
        optimizer_step(rm, opt, None, acc, micro, rm_loss, lambda mb: mb["input_ids"].shape[0] // 2, 1.0)

    seconds = timed_steps(args.steps, rm_step)
    print(f"reward: {args.steps * rm_cfg.batch_size / seconds:,.1f} pairs/s  ({seconds / args.steps:.3f} s/step, "
          f"batch {rm_cfg.batch_size} pairs)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
