"""What bf16 autocast buys on this CPU: a matmul of SmolLM2-135M's shape, a GPT-2 training step at
three widths, and the sampling of a model directory, in fp32 and under bf16 autocast
(`mixed_precision: bf16`), same seed.

    python benchmarks/cpu_bf16.py [--model profiles/real/artifacts/sft/model] [--prompts 24]

Prints GFLOPS of the matmul; the median seconds of a training step (forward, next-token loss,
backward, fused AdamW) of GPT-2s built from config (the embedded 4x128, and the TRL benchmark's
'tiny' 4x256 and 'small' 8x512; batch 8 x 128 tokens, vocabulary 4096); and the seconds, mean
response length and EOS share of the sampling. The prompts are the held-out HH prompts of the real
profile when it has run, else a fixed list.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rlhf.generation import generate
from rlhf.train import load_causal_lm, load_tokenizer
from rlhf.train.runtime import cpu_has_bf16, make_accelerator

ROOT = Path(__file__).resolve().parents[1]
FALLBACK = ["How do I water a fern?", "Explain how tides work.", "Write a haiku about autumn.",
            "What is a good way to learn to cook?"]


def matmul_gflops(dtype: torch.dtype, m: int = 2048, k: int = 576, n: int = 1536, reps: int = 30) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9


def train_step_seconds(n_layer: int, n_head: int, n_embd: int, precision: str, steps: int = 8) -> float:
    """Median seconds of a GPT-2 training step (n_layer blocks of width n_embd, 4096 tokens) on
    8 x 128 random tokens under `make_accelerator(precision)`, after two warm-up steps."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf.train import build_optimizer

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=4096, n_positions=128, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                        bos_token_id=1, eos_token_id=2, activation_function="gelu_pytorch_tanh")
    model = GPT2LMHeadModel(config).train()
    accelerator = make_accelerator(precision)
    optimizer = build_optimizer(model, 1e-4, 0.0, (0.9, 0.95), 1e-8)
    ids = torch.randint(3, 4096, (8, 128))
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        with accelerator.autocast():
            logits = model(input_ids=ids).logits  # (8, 128, V)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return sorted(times[2:])[steps // 2]


def heldout_prompts(count: int) -> list:
    from rlhf.judges.rows import read_eval_prompts

    path = ROOT / "profiles" / "real" / "artifacts" / "data" / "eval_prompts.jsonl"
    if not path.is_file():
        return (FALLBACK * count)[:count]
    rows = [r for r in read_eval_prompts(path, None) if r.get("set") == "heldout"]
    return [r["prompt"] for r in rows[:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "profiles" / "real" / "artifacts" / "sft" / "model")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    print(f"native bf16 matmul on this CPU: {cpu_has_bf16()}")
    for dtype in (torch.float32, torch.bfloat16):
        print(f"matmul 2048x576 @ 576x1536, {str(dtype).split('.')[-1]:>8}: {matmul_gflops(dtype):7.1f} GFLOPS")
    if cpu_has_bf16():
        for n_layer, n_head, n_embd in ((4, 4, 128), (4, 4, 256), (8, 8, 512)):
            fp32, bf16 = (train_step_seconds(n_layer, n_head, n_embd, p) for p in ("no", "bf16"))
            print(f"GPT-2 {n_layer}x{n_embd} training step, 8 x 128 tokens: fp32 {fp32 * 1e3:6.1f} ms, "
                  f"bf16 {bf16 * 1e3:6.1f} ms ({fp32 / bf16:.2f}x)")
    model, tokenizer = load_causal_lm(args.model).eval(), load_tokenizer(args.model)
    prompts = heldout_prompts(args.prompts)
    for precision in ("no", "bf16") if cpu_has_bf16() else ("no",):
        accelerator = make_accelerator(precision)
        start = time.perf_counter()
        with torch.no_grad(), accelerator.autocast():
            out = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, temperature=0.7,
                           batch_size=32, seed=0)
        seconds = time.perf_counter() - start
        print(f"sampling {len(prompts)} prompts x {args.max_new_tokens} tokens, mixed_precision={precision:>4}: "
              f"{seconds:6.1f} s, mean length {out.response_mask.sum(1).float().mean():.1f}, "
              f"EOS share {out.ended.float().mean():.2f}")


if __name__ == "__main__":
    main()
