"""What `torch.compile` buys a training step on this CPU: the PPO policy's step (teacher-forced
response log-probs at T = 0.7, a clipped-ratio-shaped loss, backward, clip, fused AdamW) on the
GPT-2 sizes of the TRL benchmark, eager against compiled, same weights and batches.

    python benchmarks/compile_step.py [--sizes embedded tiny small] [--steps 20] [--threads N]

Batch 8 x (32 prompt + 32 response) tokens, as one PPO minibatch of benchmarks/trl_compare.py.
Prints, per size: the eager step's median ms, the compiled step's first call (compilation
included), its median ms at the same shape, and the seconds it spends recompiling when the
response length changes (PPO trims every minibatch to its longest row, so lengths vary), and the
largest difference between the two paths' step-1 losses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.trl_peer.settings import (  # noqa: E402
    ADAM_BETAS,
    ADAM_EPS,
    BATCH,
    CLIP_EPS,
    LEARNING_RATE,
    MAX_GRAD_NORM,
    N_POSITIONS,
    PPO_NEW_TOKENS,
    PPO_PROMPT_LEN,
    SEED,
    SIZES,
    TEMPERATURE,
    VOCAB,
    Size,
)

SHAPES = {"embedded": Size(n_layer=4, n_head=4, n_embd=128), **SIZES}


class Vocab:
    """What `rlhf.train.build_gpt2` reads of a tokenizer: the benchmark's vocabulary, token 0 as bos/eos/pad."""

    bos_token_id = eos_token_id = pad_token_id = 0

    def __len__(self) -> int:
        return VOCAB


def build(shape: Size) -> torch.nn.Module:
    from rlhf.train import build_gpt2

    return build_gpt2(Vocab(), shape.n_layer, shape.n_head, shape.n_embd, N_POSITIONS, SEED)


def step_fn(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """One policy step of the project's shape: response log-probs, the clipped PPO loss, backward."""
    from rlhf.logprobs import logprobs_and_entropy, response_logits
    from rlhf.losses.ppo import ppo_policy_loss

    def step(ids: torch.Tensor, mask: torch.Tensor, old: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        logits = response_logits(model, ids, mask, PPO_PROMPT_LEN, TEMPERATURE)
        logp, _ = logprobs_and_entropy(logits, ids[:, PPO_PROMPT_LEN:], entropy_grad=False)
        loss, _ = ppo_policy_loss(logp, old, adv, torch.ones_like(logp), CLIP_EPS)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def batch(response_len: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (BATCH, PPO_PROMPT_LEN + response_len), generator=g)
    mask = torch.ones_like(ids)
    mask[: BATCH // 2, :4] = 0  # some left-padded prompts
    old = -torch.rand(BATCH, response_len, generator=g) * 8
    adv = torch.randn(BATCH, response_len, generator=g)
    return ids, mask, old, adv


def run(size: str, steps: int, compiled: bool) -> dict[str, float]:
    model = build(SHAPES[size]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True)
    if compiled:
        model.forward = torch.compile(model.forward, dynamic=False)
    step = step_fn(model, optimizer)
    t0 = time.perf_counter()
    first = float(step(*batch(PPO_NEW_TOKENS, 0)))
    first_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(*batch(PPO_NEW_TOKENS, i + 1))
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    step(*batch(PPO_NEW_TOKENS - 7, steps + 1))  # another response length
    other_s = time.perf_counter() - t0
    return {"first_s": first_s, "median_ms": 1e3 * statistics.median(times), "other_len_s": other_s, "loss": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["embedded", "tiny", "small"], choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; batch {BATCH} x ({PPO_PROMPT_LEN} + {PPO_NEW_TOKENS}) "
          f"tokens, {args.steps} timed steps")
    print(f"{'size':10s}{'eager ms':>10s}{'compiled ms':>13s}{'speed-up':>10s}{'compile s':>11s}"
          f"{'new length s':>14s}{'step-1 loss diff':>18s}")
    for size in args.sizes:
        eager, comp = run(size, args.steps, False), run(size, args.steps, True)
        print(f"{size:10s}{eager['median_ms']:10.1f}{comp['median_ms']:13.1f}"
              f"{eager['median_ms'] / comp['median_ms']:9.2f}x{comp['first_s']:11.1f}{comp['other_len_s']:14.1f}"
              f"{abs(eager['loss'] - comp['loss']):18.1e}", flush=True)


if __name__ == "__main__":
    main()
