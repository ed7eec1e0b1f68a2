"""What the SFT loss's token log-probs cost: `rlhf.losses.sft.shifted_token_logprobs` (cross-entropy
over the contiguous (B*T, V) logits, the last position ignored) against the cross-entropy of the
transposed (B, V, T-1) view of `logits[:, :-1]`, each inside a whole SFT step of the project's GPT-2.

    python benchmarks/sft_logprobs.py [--sizes embedded tiny small] [--rounds 8] [--steps 10] [--threads N]
    python benchmarks/sft_logprobs.py --stage [--rounds 2]

Per size: one SFT step (forward with the LM head from position 8 on, loss, backward, fused AdamW)
on batch x 128 tokens, both log-prob paths timed in interleaved rounds of `--steps` steps (the
order alternating between rounds), on the same model. Prints each path's median ms per step, the
speed-up, in how many rounds the project's path was the faster, and the largest difference
between the two paths' token log-probs.

`--stage` times the embedded pipeline's whole `sft` stage instead (params.yaml, after
`./go.sh pipeline`; in a temporary project, as benchmarks/stage_option.py runs it), both paths in
alternating runs: each run's seconds, training seconds and held-out loss, then the means.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.compile_step import SHAPES, build  # noqa: E402
from benchmarks.trl_peer.settings import ADAM_BETAS, ADAM_EPS, LEARNING_RATE, N_POSITIONS, SEED, VOCAB  # noqa: E402
from rlhf.losses.sft import shifted_token_logprobs  # noqa: E402

ROWS = {"embedded": 4, "tiny": 8, "small": 8}  # params.yaml's sft.batch_size; the TRL benchmark's batch
FIRST = 8  # first position the LM head runs on (a short prompt before the targets)


def transposed_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """The plain path: cross-entropy of the (B, V, T-1) view of the shifted logits."""
    return -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none")


PATHS = {"project": shifted_token_logprobs, "transposed": transposed_logprobs}


def round_order(r: int) -> list[str]:
    """The paths in the order of round r: alternating, so neither always runs first."""
    return list(PATHS) if r % 2 == 0 else list(reversed(PATHS))


def sft_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor, mask: torch.Tensor,
             logprobs) -> None:
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=ids.shape[1] - FIRST).logits
    m = mask[:, FIRST + 1:]
    loss = -(logprobs(logits, ids[:, FIRST:]) * m).sum() / m.sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def compare(size: str, rounds: int, steps: int) -> dict[str, float]:
    model = build(SHAPES[size]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True)
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(1, VOCAB, (ROWS[size], N_POSITIONS), generator=g)
    mask = torch.ones_like(ids)
    mask[:, : FIRST + 1] = 0
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
        diff = float((shifted_token_logprobs(logits, ids) - transposed_logprobs(logits, ids)).abs().max())
    for fn in PATHS.values():  # warm-up: allocator and kernels
        for _ in range(2):
            sft_step(model, optimizer, ids, mask, fn)
    ms: dict[str, list[float]] = {name: [] for name in PATHS}
    for r in range(rounds):
        for name in round_order(r):
            t0 = time.perf_counter()
            for _ in range(steps):
                sft_step(model, optimizer, ids, mask, PATHS[name])
            ms[name].append(1e3 * (time.perf_counter() - t0) / steps)
    wins = sum(p < t for p, t in zip(ms["project"], ms["transposed"]))
    return {"project": statistics.median(ms["project"]), "transposed": statistics.median(ms["transposed"]),
            "wins": wins, "diff": diff}


def compare_stage(rounds: int) -> None:
    """The embedded `sft` stage with each log-prob path, alternating; `sft_loss` reads the module's
    `shifted_token_logprobs`, which each run sets."""
    import tempfile

    import yaml

    import rlhf.losses.sft as sft_losses
    from benchmarks.stage_option import link_inputs, run_stage
    from rlhf.paths import Paths

    if not (ROOT / "artifacts" / "data").is_dir():
        sys.exit(f"{ROOT / 'artifacts'} lacks the data outputs: run ./go.sh pipeline first")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in PATHS}
    with tempfile.TemporaryDirectory() as tmp:
        paths = Paths(Path(tmp))
        link_inputs(ROOT, paths.root, ["sft"])
        try:
            for r in range(rounds):
                for name in round_order(r):
                    sft_losses.shifted_token_logprobs = PATHS[name]
                    # run_stage overrides one option: group_by_length, set to params.yaml's own value
                    took, train, held = run_stage("sft", params, paths, "group_by_length",
                                                  params["sft"]["group_by_length"])
                    runs[name].append((took, train))
                    print(f"sft stage, {name:10s} path: {took:6.1f} s ({train:6.1f} s training), "
                          f"held-out loss {held:.6f}", flush=True)
        finally:
            sft_losses.shifted_token_logprobs = shifted_token_logprobs
    (p, p_train), (t, t_train) = (tuple(map(statistics.mean, zip(*runs[n]))) for n in ("project", "transposed"))
    print(f"sft stage mean: {p:.1f} s ({p_train:.1f} s training) with the project's path against {t:.1f} s "
          f"({t_train:.1f} s) with the transposed one ({t / p:.2f}x, training {t_train / p_train:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["embedded", "tiny", "small"], choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=None, help="8 (steps) or 2 (--stage)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--stage", action="store_true", help="time the embedded sft stage with each path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.stage:
        return compare_stage(args.rounds or 2)
    args.rounds = args.rounds or 8
    print(f"torch {torch.__version__}, {args.threads} threads; rows x {N_POSITIONS} tokens, vocabulary {VOCAB}, "
          f"{args.rounds} interleaved rounds of {args.steps} steps")
    print(f"{'size':10s}{'rows':>5s}{'transposed ms':>15s}{'project ms':>12s}{'speed-up':>10s}{'faster in':>11s}"
          f"{'max |diff|':>12s}")
    for size in args.sizes:
        r = compare(size, args.rounds, args.steps)
        print(f"{size:10s}{ROWS[size]:5d}{r['transposed']:15.1f}{r['project']:12.1f}"
              f"{r['transposed'] / r['project']:9.3f}x{r['wins']:>7d}/{args.rounds}{r['diff']:12.1e}", flush=True)


if __name__ == "__main__":
    main()
