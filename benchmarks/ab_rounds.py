"""Interleaved rounds of the project's training steps in two modes of one optimisation, on the TRL
benchmark's fixtures: the shared driver of benchmarks/last_mlp.py and benchmarks/ppo_first_minibatch.py.

Each round runs every (trainer, size) once per mode, the order of the two modes alternating between
rounds; a run is the benchmark's own project step (benchmarks/trl_peer/project.py: 2 warm-up steps,
then `--steps` timed ones; PPO: iterations) in this process. Prints each mode's median seconds per
step over all its timed steps, the speed-up of the first mode, in how many rounds it was the faster,
and the largest relative difference between the two modes' step-1 losses.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks.trl_peer import fixtures as fx
from benchmarks.trl_peer.settings import SIZES, WARMUP_STEPS

# (trainer, size, fixtures root, timed steps, mode) -> (timed step seconds, step-1 loss)
Run = Callable[[str, str, Path, int, str], tuple[list[float], float]]


def run_patched(trainer: str, size: str, root: Path, steps: int, patches: dict[tuple[Any, str], Any]
                ) -> tuple[list[float], float]:
    """One run of the project's `trainer` step with `patches` ((object, attribute) -> value) in place,
    restored afterwards with the sampler that the PPO run wraps to time it: its timed step seconds
    and step-1 loss."""
    import rlhf.stages.ppo as ppo_stage
    from benchmarks.trl_peer.project import RUNNERS

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(ppo_stage, "generate", ppo_stage.generate))
        for (target, name), value in patches.items():
            stack.enter_context(mock.patch.object(target, name, value))
        result = RUNNERS[trainer](root, size, WARMUP_STEPS, steps)
    return result.step_seconds, result.losses[0]


def main(doc: str, modes: tuple[str, str], run: Run, trainers: Sequence[str]) -> None:
    """Parse `--trainers`, `--sizes`, `--rounds`, `--steps`; run the rounds; print the table."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", default=",".join(trainers))
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    chosen, sizes = args.trainers.split(","), args.sizes.split(",")
    for name, (given, known) in {"trainer": (chosen, tuple(trainers)), "size": (sizes, tuple(SIZES))}.items():
        unknown = set(given) - set(known)
        if unknown:
            parser.error(f"unknown {name} {sorted(unknown)}: choose from {', '.join(known)}")

    on, off = modes
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"writing fixtures ({', '.join(sizes)}) ...", flush=True)
        fx.write_fixtures(root, sizes, WARMUP_STEPS + args.steps)
        seconds = {(t, s, m): [] for t in chosen for s in sizes for m in modes}
        wins = {(t, s): 0 for t in chosen for s in sizes}
        first: dict[tuple[str, str, str], float] = {}
        for r in range(args.rounds):
            for t in chosen:
                for s in sizes:
                    medians = {}
                    for mode in (modes if r % 2 == 0 else modes[::-1]):
                        steps, loss = run(t, s, root, args.steps, mode)
                        seconds[t, s, mode] += steps
                        first[t, s, mode] = loss
                        medians[mode] = statistics.median(steps)
                    wins[t, s] += medians[on] < medians[off]
                    print(f"round {r + 1}/{args.rounds} {t:6s} {s:5s}  {on} {medians[on] * 1e3:8.1f} ms  "
                          f"{off} {medians[off] * 1e3:8.1f} ms", flush=True)

    print(f"\nmedian seconds per step ({args.rounds} rounds x {args.steps} timed steps per mode)")
    print(f"{'trainer':7s} {'size':6s} {on:>9s} {off:>9s} {'speed-up':>9s} {on + ' faster':>12s} "
          f"{'step-1 loss rel. diff':>22s}")
    for t in chosen:
        for s in sizes:
            a_s, b_s = statistics.median(seconds[t, s, on]), statistics.median(seconds[t, s, off])
            a, b = first[t, s, on], first[t, s, off]
            diff = abs(a - b) / max(abs(b), 1e-12)
            print(f"{t:7s} {s:6s} {a_s:9.4f} {b_s:9.4f} {b_s / a_s:8.3f}x {wins[t, s]:>7d}/{args.rounds:<4d}"
                  f"{diff:22.1e}")
