"""What running the last block's MLP at the read positions only buys (rlhf/train/last_mlp.py): the
project's training steps with it and without it, interleaved, on the TRL benchmark's fixtures.

    python benchmarks/last_mlp.py [--trainers sft,reward,dpo,ppo] [--sizes tiny,small]
                                  [--rounds 6] [--steps 4]

Rounds as benchmarks/ab_rounds.py runs them. "plain" turns the hooks off (no MLP is found, so
every pass runs the MLP at every position). Prints each mode's median seconds per step, the
speed-up, in how many rounds "read" was the faster, and the largest relative difference between
the two modes' step-1 losses (the same sums in another order: about 1e-7 in fp32).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import rlhf.train.last_mlp as last_mlp_module  # noqa: E402
from benchmarks import ab_rounds  # noqa: E402
from benchmarks.trl_peer.settings import TRAINERS  # noqa: E402

MODES = ("read", "plain")


def run(trainer: str, size: str, root: Path, steps: int, mode: str) -> tuple[list[float], float]:
    """One run of the project's `trainer` step in `mode`: its timed step seconds and step-1 loss.
    "plain": read_at / read_from find no MLP, so they hook nothing."""
    plain = {(last_mlp_module, "_scan"): lambda _model: (None, False)}
    return ab_rounds.run_patched(trainer, size, root, steps, plain if mode == "plain" else {})


def main() -> None:
    ab_rounds.main(__doc__, MODES, run, TRAINERS)


if __name__ == "__main__":
    main()
