"""Test support: put a stage's checkpoints in the state a SIGKILL would have left them in."""

from __future__ import annotations

import shutil
from pathlib import Path

from rlhf.train.checkpoint import list_checkpoints


def as_if_killed(base: Path, keep: int = 1) -> list[Path]:
    """A finished run moves its checkpoints to `<digest>-finished` (so later runs train afresh).
    Move them back and keep only the `keep` oldest, as if the run had been killed after those.
    Returns the kept checkpoints."""
    (done,) = base.glob("*-finished")
    live = done.with_name(done.name.removesuffix("-finished"))
    done.rename(live)
    ckpts = list_checkpoints(live)
    assert len(ckpts) > keep, f"only {len(ckpts)} checkpoints under {live}"
    for c in ckpts[keep:]:
        shutil.rmtree(c)
    return ckpts[:keep]
