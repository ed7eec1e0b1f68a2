"""What taking log pi_old and V_old from the update's first minibatch buys
(rlhf/stages/ppo_update.py, `FirstMinibatch`): the project's PPO iteration with it and with the
evaluation pass over every row, interleaved, on the TRL benchmark's fixtures.

    python benchmarks/ppo_first_minibatch.py [--sizes tiny,small] [--rounds 6] [--steps 4]

Rounds as benchmarks/ab_rounds.py runs them; the benchmark's iteration has one minibatch of 8
rows per epoch, so "fused" runs no policy or critic evaluation pass at all. "plain" has
`FirstMinibatch.plan` return None. Prints each mode's median seconds per iteration, the speed-up,
in how many rounds "fused" was the faster, and the relative difference between the two modes'
first-iteration losses (the frozen batch's old log-probs and values come from a forward over the
minibatch's trimmed columns instead of the whole batch's: the same sums in another order).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import ab_rounds  # noqa: E402
from rlhf.stages.ppo_update import FirstMinibatch  # noqa: E402

MODES = ("fused", "plain")


def run(trainer: str, size: str, root: Path, steps: int, mode: str) -> tuple[list[float], float]:
    """One run of the project's PPO iteration in `mode`: its timed iteration seconds and first loss."""
    plain = {(FirstMinibatch, "plan"): classmethod(lambda cls, *args, **kwargs: None)}
    return ab_rounds.run_patched(trainer, size, root, steps, plain if mode == "plain" else {})


def main() -> None:
    ab_rounds.main(__doc__, MODES, run, ("ppo",))


if __name__ == "__main__":
    main()
