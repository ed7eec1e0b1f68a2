"""Training machinery shared by every trainer (SFT, reward model, PPO, DPO).

| module | what it gives |
| --- | --- |
| `runtime` | `make_accelerator(mixed_precision)`, `seed_everything(seed)`, RNG state save/restore, `progress_bar` |
| `models` | `load_tokenizer(dir)`, `has_tokenizer(dir)`, `build_gpt2(tokenizer, ...)`, `load_causal_lm(dir)`, `disable_dropout`, `with_activation_checkpointing` |
| `last_mlp` | `read_at(model, index)` / `read_from(model, start)`: the last block's MLP at the positions a head or loss reads only; `recompute_reads` for activation checkpointing |
| `batching` | chat-format encoding, packing, padding, `collate_sft`, `collate_pairs`, `BatchOrder`, `shard_and_split` |
| `optim` | `build_optimizer`, `build_scheduler`, `optimizer_from` / `scheduler_from` (from a `TrainConfig`), `optimizer_step` (gradient accumulation normalised over the whole step; a non-finite step is not applied), `check_finite` / `NonFiniteError`, `Throughput` |
| `checkpoint` | atomic `save_checkpoint` / `find_resumable` / `load_checkpoint`, `run_checkpoint_root` (one folder per set of inputs), `save_model_dir` |
| `loop` | `TrainingRun`: resume or start, the non-finite guard, periodic and final checkpoints, the final save, retiring |
| `sharding` | `shard(model, accelerator, fsdp)` (torch FSDP2 over the processes), `prepare` (DDP, or nothing for a sharded model), full weights and optimizer state of a sharded model for saving, `lockstep` batches |

`atomic_dir`, `read_jsonl` and `write_json` are re-exported from `rlhf.files`.

A trainer's loop, in outline (rlhf/stages/sft.py is the worked example):

    accelerator = make_accelerator(cfg.mixed_precision); seed_everything(cfg.seed)
    run = TrainingRun(paths.checkpoints(stage), <input files and upstream model dirs>, cfg, accelerator)
    model = load_causal_lm(run.resume_dir or <base model dir>)
    model = shard(model, accelerator, cfg.fsdp)        # FSDP with several processes; else as it is
    optimizer = optimizer_from(model, cfg); scheduler = scheduler_from(optimizer, cfg, total_steps)
    model, optimizer = prepare(accelerator, model, optimizer)  # DDP, unless sharded
    state = run.restore({"model": optimizer}, {"model": scheduler})
    order = BatchOrder(len(items), cfg.batch_size, cfg.seed)
    for step in range(state["step"], total_steps):
        idx = shard_and_split(order.batch(step), cfg.micro_batch_size,
                              accelerator.process_index, accelerator.num_processes)
        stats = optimizer_step(model, optimizer, scheduler, accelerator,
                               [collate(idx_mb) for idx_mb in idx], loss_fn, units, cfg.max_grad_norm)
        run.guard(step + 1, {"loss": stats["loss"], "grad_norm": stats["grad_norm"]})  # NaN: stop or skip
        run.checkpoint(step + 1, total_steps, {"": model}, {"model": optimizer}, {"model": scheduler}, state)
    run.finish(out_dir, model, tokenizer)
"""

from rlhf.files import atomic_dir, read_jsonl, write_json
from rlhf.train.batching import (
    BatchOrder,
    collate_pairs,
    collate_preference_batch,
    collate_shared_pairs,
    collate_sft,
    encode_dialogue,
    encode_sft_example,
    length_order,
    pack_examples,
    pad,
    pairs_in,
    position_ids,
    shard_and_split,
)
from rlhf.train.checkpoint import (
    find_resumable,
    inputs_digest,
    latest_checkpoint,
    load_checkpoint,
    retire_checkpoints,
    run_checkpoint_root,
    save_checkpoint,
    save_model_dir,
)
from rlhf.train.models import (
    build_gpt2,
    disable_dropout,
    has_tokenizer,
    load_causal_lm,
    with_activation_checkpointing,
    load_tokenizer,
)
from rlhf.train.optim import (
    Throughput,
    build_optimizer,
    build_scheduler,
    lr_factor,
    optimizer_from,
    optimizer_step,
    scheduler_from,
)
from rlhf.train.runtime import (
    make_accelerator,
    progress_bar,
    resolve_mixed_precision,
    rng_state,
    seed_everything,
    set_rng_state,
    torch_threads,
)

__all__ = [
    "BatchOrder", "Throughput", "atomic_dir", "build_gpt2", "build_optimizer", "build_scheduler",
    "collate_pairs", "collate_preference_batch", "collate_shared_pairs", "collate_sft", "disable_dropout", "encode_dialogue",
    "encode_sft_example", "find_resumable", "has_tokenizer", "inputs_digest", "latest_checkpoint", "length_order", "pairs_in", "load_causal_lm",
    "load_checkpoint", "load_tokenizer", "lr_factor", "make_accelerator", "optimizer_from", "optimizer_step", "pack_examples", "pad",
    "position_ids", "progress_bar", "read_jsonl", "resolve_mixed_precision", "retire_checkpoints", "rng_state",
    "run_checkpoint_root",
    "save_checkpoint",
    "save_model_dir", "scheduler_from", "seed_everything", "set_rng_state", "shard_and_split", "torch_threads", "write_json",
]
