"""What activation checkpointing (`activation_checkpointing: true`) saves and costs: SFT optimizer
steps of a real model, once plain and once checkpointed, each in a fresh process, same data.

    python benchmarks/activation_memory.py [--model profiles/real/models/smollm2-135m-instruct]
                                           [--steps 3] [--batch 4] [--seq-len 512] [--precision fp32|bf16]

Per mode it prints the most one step adds to the memory held when it starts (the weights and the
AdamW state; on a CPU also what the allocator kept of earlier steps): on a GPU from the peak of
allocated CUDA memory, on a CPU from the resident high-water mark, reset before each step; then
the peak itself, the median seconds per step after the first, and every step's loss (the two modes
must agree). The model is any local causal LM directory; the default is the real
profile's SmolLM2-135M-Instruct (`./go.sh real` imports it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.fsdp_memory import resident_bytes  # noqa: E402


def reset_peak_resident() -> None:
    """Linux: set this process's resident high-water mark (VmHWM) back to its resident size now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_resident_bytes() -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def worker(args: argparse.Namespace) -> None:
    """One mode in this process: a first step (allocates AdamW's state), then the measured steps."""
    import gc

    import torch

    from rlhf.stages.sft import loss_tokens, micro_batch_loss
    from rlhf.train import collate_sft, load_causal_lm, make_accelerator, with_activation_checkpointing
    from rlhf.train.optim import build_optimizer, optimizer_step
    from rlhf.train.sharding import prepare

    accelerator = make_accelerator("bf16" if args.precision == "bf16" else "no")
    cuda = accelerator.device.type == "cuda"
    model = with_activation_checkpointing(load_causal_lm(args.model), args.worker == "checkpointed").train()
    optimizer = build_optimizer(model, 1e-5)
    model, optimizer = prepare(accelerator, model, optimizer)
    vocab = model.config.vocab_size
    losses, seconds, between, peaks = [], [], [], []
    for step in range(args.steps + 1):
        ids = torch.randint(0, vocab, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(step))
        micro = [collate_sft([{"input_ids": row.tolist(), "loss_mask": [1] * args.seq_len} for row in ids], 0)]
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            between.append(torch.cuda.memory_allocated())
        else:
            between.append(resident_bytes())
            reset_peak_resident()
        start = time.perf_counter()
        stats = optimizer_step(model, optimizer, None, accelerator, micro, micro_batch_loss, loss_tokens, 1.0)
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        peaks.append(torch.cuda.max_memory_allocated() if cuda else peak_resident_bytes())
        losses.append(stats["loss"])
    measured = range(1, args.steps + 1)  # the first step also allocates AdamW's moments
    result = {"losses": losses, "seconds": [seconds[i] for i in measured],
              "added": max(peaks[i] - between[i] for i in measured), "peak": max(peaks[i] for i in measured),
              "device": str(accelerator.device)}
    Path(args.out).write_text(json.dumps(result))


def run(mode: str, args: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / mode
    cmd = [sys.executable, __file__, "--worker", mode, "--model", args.model, "--steps", str(args.steps),
           "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--precision", args.precision, "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "profiles/real/models/smollm2-135m-instruct"))
    parser.add_argument("--steps", type=int, default=3, help="measured steps, after one first step")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--worker", choices=["plain", "checkpointed"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    mib = 1 << 20
    with tempfile.TemporaryDirectory() as tmp:
        results = {mode: run(mode, args, Path(tmp)) for mode in ("plain", "checkpointed")}
    device = results["plain"]["device"]
    print(f"{args.model}: {args.steps} steps of {args.batch} x {args.seq_len} tokens, {args.precision}, on {device}")
    print("| mode | most a step adds MiB | peak MiB | s/step | losses |")
    print("| --- | --- | --- | --- | --- |")
    for mode, r in results.items():
        print(f"| {mode} | {r['added'] / mib:.0f} | {r['peak'] / mib:.0f} | "
              f"{statistics.median(r['seconds']):.2f} | "
              f"{', '.join(f'{x:.5f}' for x in r['losses'])} |")
    plain, ckpt = results["plain"], results["checkpointed"]
    print(f"checkpointed / plain: {ckpt['added'] / plain['added']:.2f}x the added memory, "
          f"{statistics.median(ckpt['seconds']) / statistics.median(plain['seconds']):.2f}x the time per step")


if __name__ == "__main__":
    main()
