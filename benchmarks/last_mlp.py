"""What running the last block's MLP at the read positions only buys (rlhf/train/last_mlp.py): the
project's training steps with it and without it, interleaved, on the TRL benchmark's fixtures.

    python benchmarks/last_mlp.py [--trainers sft,reward,dpo,ppo] [--sizes tiny,small]
                                  [--rounds 6] [--steps 4]

Each round runs every (trainer, size) once per mode, the order of the two modes alternating between
rounds; a run is the benchmark's own project step (benchmarks/trl_peer/project.py: 2 warm-up steps,
then `--steps` timed ones; PPO: iterations) in this process. "plain" turns the hooks off (no MLP is
found, so every pass runs the MLP at every position). Prints each mode's median seconds per step
over all its timed steps, the speed-up, in how many rounds "read" was the faster, and the largest
relative difference between the two modes' step-1 losses (the same sums in another order: about
1e-7 in fp32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import rlhf.stages.ppo as ppo_stage  # noqa: E402
import rlhf.train.last_mlp as last_mlp_module  # noqa: E402
from benchmarks.trl_peer import fixtures as fx  # noqa: E402
from benchmarks.trl_peer.project import RUNNERS  # noqa: E402
from benchmarks.trl_peer.settings import SIZES, TRAINERS, WARMUP_STEPS  # noqa: E402

MODES = ("read", "plain")


def run(trainer: str, size: str, root: Path, steps: int, mode: str) -> tuple[list[float], float]:
    """One run of the project's `trainer` step in `mode`: its timed step seconds and step-1 loss."""
    scan, sampler = last_mlp_module._scan, ppo_stage.generate  # the PPO run wraps the sampler to time it
    if mode == "plain":  # read_at / read_from find no MLP, so they hook nothing
        last_mlp_module._scan = lambda _model: (None, False)
    try:
        result = RUNNERS[trainer](root, size, WARMUP_STEPS, steps)
    finally:
        last_mlp_module._scan, ppo_stage.generate = scan, sampler
    return result.step_seconds, result.losses[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    trainers, sizes = args.trainers.split(","), args.sizes.split(",")
    for name, (given, known) in {"trainer": (trainers, TRAINERS), "size": (sizes, tuple(SIZES))}.items():
        unknown = set(given) - set(known)
        if unknown:
            parser.error(f"unknown {name} {sorted(unknown)}: choose from {', '.join(known)}")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"writing fixtures ({', '.join(sizes)}) ...", flush=True)
        fx.write_fixtures(root, sizes, WARMUP_STEPS + args.steps)
        seconds = {(t, s, m): [] for t in trainers for s in sizes for m in MODES}
        wins = {(t, s): 0 for t in trainers for s in sizes}
        first: dict[tuple[str, str, str], float] = {}
        for r in range(args.rounds):
            for t in trainers:
                for s in sizes:
                    medians = {}
                    for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                        steps, loss = run(t, s, root, args.steps, mode)
                        seconds[t, s, mode] += steps
                        first[t, s, mode] = loss
                        medians[mode] = statistics.median(steps)
                    wins[t, s] += medians["read"] < medians["plain"]
                    print(f"round {r + 1}/{args.rounds} {t:6s} {s:5s}  read {medians['read'] * 1e3:8.1f} ms  "
                          f"plain {medians['plain'] * 1e3:8.1f} ms", flush=True)

    print(f"\nmedian seconds per step ({args.rounds} rounds x {args.steps} timed steps per mode)")
    print(f"{'trainer':7s} {'size':6s} {'read':>9s} {'plain':>9s} {'speed-up':>9s} {'read faster':>12s} "
          f"{'step-1 loss rel. diff':>22s}")
    for t in trainers:
        for s in sizes:
            read, plain = statistics.median(seconds[t, s, "read"]), statistics.median(seconds[t, s, "plain"])
            a, b = first[t, s, "read"], first[t, s, "plain"]
            diff = abs(a - b) / max(abs(b), 1e-12)
            print(f"{t:7s} {s:6s} {read:9.4f} {plain:9.4f} {plain / read:8.3f}x {wins[t, s]:>7d}/{args.rounds:<4d}"
                  f"{diff:22.1e}")


if __name__ == "__main__":
    main()
