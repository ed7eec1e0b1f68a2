"""Where each side's training step spends its time, by kind of operation, and what that leaves to
gain: benchmarks/trl_compare.py's runs (same fixtures, settings, workers and interleaving) with the
timed steps under torch.profiler (benchmarks/trl_peer/op_profile.py).

    python benchmarks/step_profile.py [--sizes tiny,small] [--trainers sft,reward,dpo,ppo]
                                      [--steps 3] [--repeats 1] [any other trl_compare.py option]

Prints, per trainer, size and side, the profiled step's milliseconds and its shares in matmuls,
attention kernels, the optimizer, other operators and outside operators (Python and framework code),
with the matmuls' FLOP rate as a share of this machine's matmul peak and their FLOPs over the model
FLOPs trl_compare.py counts for the step (1.00 when the count is exact; attention's products are
in neither), and its largest other
operators in milliseconds per step. Then, per trainer and size:
the project/TRL ratio of the profiled steps; the ratio of the two sides' matmul seconds (near 1 when
both run the same products at the same rate); and the ceiling, TRL's profiled step over the
project's matmul and attention seconds alone: the speed-up the project would reach if everything
else in its step (norms, activations, copies, the optimizer, Python) cost nothing, at the same
matmul work and rate. A target above the ceiling cannot be met without fewer or faster matmuls.
The defaults take about 10 minutes on 2 cores (TRL 1.16 and TRL 1.12 as in trl_compare.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.trl_compare import Key, Runs, collect, installed_trl, parse_args, report  # noqa: E402
from benchmarks.trl_peer.op_profile import KINDS, OTHER, TOP_OTHERS  # noqa: E402

DESCRIPTION = " ".join(__doc__.split("\n\n")[0].split())  # the first paragraph, for --help
DEFAULTS = ["--steps", "3", "--repeats", "1"]  # a profile needs fewer steps than a timing


def per_step(runs: Runs) -> dict[str, float]:
    """Per profiled step, over all repeats: seconds of each kind, of the window and of the largest
    other operators, matmul FLOPs, and the model FLOPs trl_compare.py counts for the step."""
    steps = sum(r["profile"]["steps"] for r in runs.results)
    keys = dict.fromkeys(k for r in runs.results for k in r["profile"] if k != "steps")
    split = {k: sum(r["profile"].get(k, 0.0) for r in runs.results) / steps for k in keys}
    return {**split, "counted_flops": runs.results[0]["flops_per_step"]}


def others_table(splits: dict[Key, dict[str, float]]) -> list[str]:
    lines = ["| trainer | size | side | largest other operators, ms per step |", "| --- | --- | --- | --- |"]
    for (trainer, size, side), s in splits.items():
        top = sorted(((k[len(OTHER):], v) for k, v in s.items() if k.startswith(OTHER)), key=lambda kv: -kv[1])
        cells = ", ".join(f"{name.removeprefix('aten::')} {1e3 * t:.1f}" for name, t in top[:TOP_OTHERS])
        lines.append(f"| {trainer} | {size} | {'TRL' if side == 'trl' else side} | {cells} |")
    return lines


def kinds_table(splits: dict[Key, dict[str, float]], peak: float) -> list[str]:
    lines = ["| trainer | size | side | profiled step ms | " + " | ".join(KINDS) + " | matmul FLOP rate, % of peak "
             "| matmul FLOPs / counted |", "| --- " * (6 + len(KINDS)) + "|"]
    for (trainer, size, side), s in splits.items():
        shares = " | ".join(f"{100 * s[k] / s['window']:.0f}%" for k in KINDS)
        rate = s["matmul_flops"] / s["matmul"] / peak if s["matmul"] else 0.0
        lines.append(f"| {trainer} | {size} | {'TRL' if side == 'trl' else side} | {1e3 * s['window']:.1f} | {shares} "
                     f"| {100 * rate:.1f}% | {s['matmul_flops'] / s['counted_flops']:.2f} |")
    return lines


def ceiling_table(splits: dict[Key, dict[str, float]]) -> list[str]:
    lines = ["| trainer | size | project/TRL speed (profiled steps) | TRL/project matmul seconds "
             "| ceiling: TRL step / project matmul + attention seconds |", "| --- | --- | --- | --- | --- |"]
    for (trainer, size, side), mine in splits.items():
        peer = splits.get((trainer, size, "trl"))
        if side != "project" or peer is None:
            continue
        lines.append(f"| {trainer} | {size} | {peer['window'] / mine['window']:.2f}x "
                     f"| {peer['matmul'] / mine['matmul']:.2f}x "
                     f"| {peer['window'] / (mine['matmul'] + mine['attention']):.2f}x |")
    return lines


def main(argv: list[str] | None = None, with_trl: bool = True, say=report) -> dict[Key, dict[str, float]]:
    import torch

    from benchmarks.trl_peer.measure import matmul_dtype, peak_matmul_flops
    from benchmarks.trl_peer.settings import WARMUP_STEPS

    args = parse_args(DEFAULTS + list(sys.argv[1:] if argv is None else argv), DESCRIPTION)
    if args.device != "cpu":  # the profiler's CPU times of GPU operators are their launches, not their work
        raise SystemExit("step_profile.py profiles CPU steps only; on a GPU use trl_compare.py's timings")
    args.profile = True
    torch.set_num_threads(args.threads)
    dtype = matmul_dtype(args.precision)
    peak = peak_matmul_flops(dtype=dtype, device=args.device)
    say(f"torch {torch.__version__}, {args.threads} threads, {args.precision}; TRL "
        f"{installed_trl() or 'not installed' if with_trl else 'skipped'}; {args.steps} profiled steps "
        f"(PPO: iterations) after {WARMUP_STEPS} warm-up, {args.repeats} run(s) per side")
    runs = collect(args, with_trl, WARMUP_STEPS, say)
    probes = [r["probe_flops"] for rs in runs.values() for r in rs.results]
    peak = max(peak, peak_matmul_flops(dtype=dtype, device=args.device), *probes)
    splits = {key: per_step(r) for key, r in runs.items() if r.results}
    say("")
    say(f"peak: best {args.precision} matmul rate before and after the runs and around each, {peak / 1e9:.0f} GFLOP/s")
    for line in kinds_table(splits, peak):
        say(line)
    say("")
    for line in others_table(splits):
        say(line)
    lines = ceiling_table(splits)
    if len(lines) > 2:
        say("")
        for line in lines:
            say(line)
    return splits


if __name__ == "__main__":
    main()
