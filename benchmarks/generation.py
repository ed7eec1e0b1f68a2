"""Sampling speed: the project's decode loop (`rlhf.generation.decode`) against transformers'
`model.generate` with the same settings, on the same GPT-2 weights and prompts, interleaved.

    python benchmarks/generation.py [--sizes embedded tiny small] [--batches 8 64] [--repeats 5]

Each run samples `--new-tokens` tokens after 32-token prompts with PPO's row-seeded sampler at
T = 0.7, so both paths draw the same tokens (checked on every run). It prints, per model size and
batch: ms per decode step, sampled tokens/s, and the share of this machine's fp32 matmul peak
(2 N FLOPs per sampled token, N as in benchmarks/trl_peer/measure.py). The last column is a bound:
the rate the model's own weight matmuls reach on `batch` rows alone, timed here, as a share of the
peak. At a few rows a decode step is a matrix-vector product whose speed is set by memory, not by
the matmul units, so no decode loop can go above that column at that batch.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.trl_peer import fixtures as fx  # noqa: E402
from benchmarks.trl_peer.measure import flop_params, peak_matmul_flops  # noqa: E402
from benchmarks.trl_peer.settings import N_POSITIONS, SEED, SIZES, Size  # noqa: E402

SHAPES = {"embedded": Size(n_layer=4, n_head=4, n_embd=128), **SIZES}  # embedded: params.yaml's GPT-2
TEMPERATURE = 0.7


def hf_generate(model, ids, mask, new_tokens, seeds, tok):
    """transformers' sampling loop, as `rlhf.generation.generate` called it before `decode`."""
    from transformers import LogitsProcessorList

    from rlhf.generation import RowSeededSampler, checkpoint_generation_config_hidden, sampling_config

    cfg = sampling_config(tok, new_tokens, 0.0, 1.0)
    sampler = LogitsProcessorList([RowSeededSampler(seeds, TEMPERATURE, 1.0, ids.device)])
    with checkpoint_generation_config_hidden(model):
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, logits_processor=sampler)
    return out[:, ids.shape[1]:]


def project_decode(model, ids, mask, new_tokens, seeds, tok):
    from rlhf.generation import RowSeededSampler, decode, token_rule

    pick = token_rule(0.0, 1.0, RowSeededSampler(seeds, TEMPERATURE, 1.0, ids.device))
    return decode(model, ids, mask, new_tokens, pick, tok.eos_token_id, tok.pad_token_id)


def weight_matmul_rate(model: torch.nn.Module, rows: int, repeats: int = 5) -> float:
    """FLOP/s of the model's weight matmuls (every 2-D parameter but the position table, the LM
    head included) on `rows` input rows, each weight once per pass: a decode step's matmuls."""
    weights = [p.detach() for n, p in model.named_parameters() if p.ndim == 2 and "wpe" not in n]
    xs = [torch.randn(rows, w.shape[0]) for w in weights]  # GPT-2's Conv1D weights are (in, out); wte is (V, d)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x, w in zip(xs, weights):
            x @ w
        best = min(best, time.perf_counter() - t0)
    return sum(2.0 * rows * w.numel() for w in weights) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["embedded", "tiny", "small"], choices=list(SHAPES))
    ap.add_argument("--batches", nargs="+", type=int, default=[8, 64])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from rlhf.generation import encode_prompts, row_seed
    from rlhf.train import build_gpt2
    from rlhf.train.runtime import quiet_transformers

    peak = peak_matmul_flops()
    print(f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, {args.threads} threads; {args.new_tokens} tokens sampled "
          f"per prompt, median of {args.repeats} interleaved runs")
    print("| size | batch | generate ms/step | decode ms/step | speed-up | decode tokens/s | decode % of peak "
          "| weight matmuls at this batch, % of peak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    with quiet_transformers():
        words = fx.random_words(random.Random(SEED), 4000)
        tok = fx.build_tokenizer(words)  # the TRL benchmark's tokenizer and prompts (benchmarks/trl_peer)
        prompts = [p["text"] for p in fx.ppo_prompts(tok, words, max(args.batches))]
        for size in args.sizes:
            shape = SHAPES[size]
            model = build_gpt2(tok, shape.n_layer, shape.n_head, shape.n_embd, N_POSITIONS, SEED).eval()
            n = flop_params(model, lm_head=True)
            for batch in args.batches:
                ids, mask = encode_prompts(tok, prompts[:batch])
                seeds = [row_seed(SEED, i) for i in range(batch)]
                times: dict[str, list[float]] = {"generate": [], "decode": []}
                with torch.no_grad():
                    for rep in range(args.repeats + 1):  # the first round warms up
                        outs = {}
                        for name, fn in (("generate", hf_generate), ("decode", project_decode)):
                            t0 = time.perf_counter()
                            outs[name] = fn(model, ids, mask, args.new_tokens, seeds, tok)
                            if rep:
                                times[name].append((time.perf_counter() - t0) / outs[name].shape[1])
                        assert torch.equal(outs["generate"], outs["decode"]), "the two loops sampled different tokens"
                g, d = statistics.median(times["generate"]), statistics.median(times["decode"])
                bound = weight_matmul_rate(model, batch)
                print(f"| {size} | {batch} | {g * 1e3:.2f} | {d * 1e3:.2f} | {g / d:.2f}x | {batch / d:.0f} "
                      f"| {100 * 2 * n * batch / d / peak:.1f}% | {100 * bound / peak:.1f}% |")


if __name__ == "__main__":
    main()
