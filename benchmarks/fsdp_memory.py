"""What FSDP saves per process: a few SFT optimizer steps of a real model in N processes, once
replicated (DDP) and once sharded (`fsdp: true`, torch FSDP2), with the same data.

    python benchmarks/fsdp_memory.py [--model profiles/real/models/smollm2-135m-instruct]
                                     [--processes 2] [--steps 3] [--batch 4] [--seq-len 128]

Prints, per mode, the bytes each process holds in parameters, gradients and AdamW moments after the
last step (counted from the tensors: the local shard of a sharded one), the process's resident
memory then, the seconds per step, and the loss of every step (the two modes must agree). The model
is any local causal LM directory; the default is the real profile's SmolLM2-135M-Instruct
(`./go.sh real` imports it). Runs on CPUs (gloo) or GPUs (NCCL).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tensor_bytes(tensors) -> int:
    from torch.distributed.tensor import DTensor

    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors if t is not None]
    return sum(t.numel() * t.element_size() for t in local)


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(model_dir: str, fsdp: bool, steps: int, batch: int, seq_len: int, out: str) -> None:
    """One of the N processes (started by torch.distributed.run)."""
    import gc

    import torch

    from rlhf.stages.sft import loss_tokens, micro_batch_loss
    from rlhf.train import collate_sft, load_causal_lm, make_accelerator
    from rlhf.train.optim import build_optimizer, optimizer_step
    from rlhf.train.sharding import prepare, shard

    accelerator = make_accelerator("no")
    model = shard(load_causal_lm(model_dir), accelerator, fsdp)
    vocab = model.config.vocab_size
    optimizer = build_optimizer(model, 1e-5)
    model, optimizer = prepare(accelerator, model, optimizer)
    losses, seconds = [], []
    for step in range(steps):
        ids = torch.randint(0, vocab, (batch * accelerator.num_processes, seq_len),
                            generator=torch.Generator().manual_seed(step))[accelerator.process_index::accelerator.num_processes]
        micro = [collate_sft([{"input_ids": row.tolist(), "loss_mask": [1] * seq_len} for row in ids], 0)]
        start = time.perf_counter()
        stats = optimizer_step(model, optimizer, None, accelerator, micro, micro_batch_loss, loss_tokens, 1.0)
        seconds.append(time.perf_counter() - start)
        losses.append(stats["loss"])
    params = list(model.parameters())
    held = {"parameters": tensor_bytes(params),
            "gradients": tensor_bytes([p.grad for p in params]),  # None after the step: set_to_none
            "adamw_moments": tensor_bytes([v for s in optimizer.state.values() for k, v in s.items()
                                           if k in ("exp_avg", "exp_avg_sq")])}
    gc.collect()
    held["resident"] = resident_bytes()
    result = {"rank": accelerator.process_index, "losses": losses, "seconds": seconds, **held}
    Path(f"{out}.{accelerator.process_index}").write_text(json.dumps(result))


def run(mode: str, args: argparse.Namespace, tmp: Path) -> list[dict]:
    out = tmp / mode
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.processes),
           __file__, "--worker", mode, "--model", args.model, "--steps", str(args.steps), "--batch", str(args.batch),
           "--seq-len", str(args.seq_len), "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"})
    return [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(args.processes)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "profiles/real/models/smollm2-135m-instruct"))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="rows per process and step")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--worker", choices=["ddp", "fsdp"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        return worker(args.model, args.worker == "fsdp", args.steps, args.batch, args.seq_len, args.out)
    mib = 1 << 20
    with tempfile.TemporaryDirectory() as tmp:
        results = {mode: run(mode, args, Path(tmp)) for mode in ("ddp", "fsdp")}
    print(f"{args.model}: {args.processes} processes, {args.steps} steps of {args.batch} x {args.seq_len} tokens each")
    print("| mode | parameters MiB | AdamW moments MiB | resident MiB | s/step | losses |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode, ranks in results.items():
        worst = max(ranks, key=lambda r: r["resident"])
        steps = sorted(s for r in ranks for s in r["seconds"][1:] or r["seconds"])
        print(f"| {mode} | {max(r['parameters'] for r in ranks) / mib:.0f} | "
              f"{max(r['adamw_moments'] for r in ranks) / mib:.0f} | {worst['resident'] / mib:.0f} | "
              f"{steps[len(steps) // 2]:.2f} | {', '.join(f'{x:.4f}' for x in ranks[0]['losses'])} |")


if __name__ == "__main__":
    main()
