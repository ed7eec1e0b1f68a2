"""Test support: train a stage in a child process and SIGKILL it at a seeded moment.

A `Kill` names the moment by the stage's own progress, not by wall time, so that a busy machine
moves it only a little: some milliseconds after a given checkpoint is complete, while a checkpoint
is being written (its `.step-N.tmp-*` directory exists), or while the final model is being written
(`.model.tmp-*` beside it). The child is stopped (SIGSTOP) at that moment, what it left on disk is
noted, and it is then killed with SIGKILL: the kill lands exactly where the files were seen.

Deleting an old checkpoint takes well under a millisecond, too short to hit from outside; for a
`rotation` kill the child stops itself inside that deletion (see `_stop_while_deleting`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.config.dpo import DPOConfig
from rlhf.config.ppo import PPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.paths import Paths
from rlhf.stages.dpo import run_dpo
from rlhf.stages.ppo import run_ppo
from rlhf.stages.reward import run_reward
from rlhf.stages.sft import run_sft
from rlhf.train.checkpoint import TRAINER_STATE

REPO = Path(__file__).resolve().parents[2]
CHILD = "import sys; from tests.faults.kills import child_main; child_main(*sys.argv[1:])"
POLL_S = 0.0005  # a checkpoint of the tiny models takes ~10 ms to write

# where the child was when it was stopped
IN_CHECKPOINT_WRITE, IN_FINAL_SAVE, IN_ROTATION = "checkpoint write", "final save", "deleting an old checkpoint"
BETWEEN_WRITES, FINISHED = "between writes", "finished"


def run_stage(stage: str, cfg: dict[str, Any], paths: Paths):
    """The stage's library function with its config (what `rlhf <stage>` runs)."""
    run, config = {"sft": (run_sft, SFTConfig), "reward": (run_reward, RewardConfig), "dpo": (run_dpo, DPOConfig),
                   "ppo": (run_ppo, PPOConfig)}[stage]
    return run(config(**cfg), paths)


def _stop_while_deleting(name: str) -> None:
    """When this process deletes the checkpoint directory `name` (`shutil.rmtree`, as
    `save_checkpoint` drops old checkpoints; under a dotted name too, should it be moved aside
    first), delete its entries in the order rmtree does until the trainer state is gone, then stop
    (SIGSTOP) for the test to kill."""
    real = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if Path(path).name.lstrip(".").startswith(name):
            for entry in list(os.scandir(path)):
                if entry.is_dir():
                    real(entry.path)
                else:
                    os.unlink(entry.path)
                if entry.name == TRAINER_STATE:
                    os.kill(os.getpid(), signal.SIGSTOP)
        return real(path, *args, **kwargs)

    shutil.rmtree = rmtree


def child_main(stage: str, cfg: str, root: str, stop_deleting: str) -> None:
    """Import what the stage's first call would, then wait for the test's go (a line on stdin): the
    seconds of importing overlap the test's previous trial instead of adding to it."""
    import accelerate  # noqa: F401
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: F401

    if stop_deleting:
        _stop_while_deleting(stop_deleting)
    if sys.stdin.readline() == "go\n":  # not when the test ended without starting it
        run_stage(stage, json.loads(cfg), Paths(Path(root)))


@dataclass(frozen=True)
class Kill:
    """after: `delay_s` after checkpoint `step` is complete; write: `delay_s` after the temporary
    directory of checkpoint `step` (or a later one) appears; final: `delay_s` after the final
    model's temporary directory appears; rotation: while old checkpoint `step` is being deleted,
    just after its trainer state."""

    mode: str
    step: int
    delay_s: float


def kill_plan(rng: random.Random, modes: list[str], checkpoint_steps: list[int], keep: int) -> list[Kill]:
    """One seeded kill per mode. `after` kills wait for a checkpoint before the last and at most
    40 ms (a few optimizer steps), so they land mid-run; `write` and `final` kills wait at most 4 ms,
    well inside a ~10 ms write; `rotation` picks one of the checkpoints that a run with `keep`
    checkpoints deletes."""
    plan = []
    for mode in modes:
        if mode == "after":
            plan.append(Kill(mode, rng.choice(checkpoint_steps[:-1]), rng.uniform(0.0, 0.040)))
        elif mode == "write":
            plan.append(Kill(mode, rng.choice(checkpoint_steps), rng.uniform(0.0, 0.004)))
        elif mode == "final":
            plan.append(Kill(mode, 0, rng.uniform(0.0, 0.004)))
        else:
            plan.append(Kill(mode, rng.choice(checkpoint_steps[:-keep]), 0.0))
    return plan


def _names(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder)]
    except FileNotFoundError:
        return []


def _step(name: str) -> int:
    """step-00000012 or .step-00000012.tmp-abc -> 12."""
    return int(name.lstrip(".").split(".")[0].removeprefix("step-"))


def progress(paths: Paths, stage: str) -> dict[str, Any]:
    """What the run has on disk now: checkpoint directories by step, those being written, and the
    temporary names beside the stage's outputs (the final model being written)."""
    base = paths.checkpoints(stage)
    entries = [name for run in _names(base) for name in _names(base / run)]
    return {
        "complete": sorted(_step(n) for n in entries if n.startswith("step-")),
        "writing": sorted(_step(n) for n in entries if n.startswith(".step-") and ".tmp-" in n),
        "final": [n for n in _names(getattr(paths, stage)) if n.startswith(".")],
    }


def _reached(kill: Kill, now: dict[str, Any]) -> bool:
    if kill.mode == "after":
        return any(s >= kill.step for s in now["complete"])
    if kill.mode == "write":
        return any(s >= kill.step for s in now["writing"])
    return bool(now["final"])


def start(stage: str, cfg: dict[str, Any], paths: Paths, kill: Kill, log: Path) -> subprocess.Popen:
    """A child that imports, then trains the stage in `paths` once `kill_at` says go."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}  # as in the test process
    stop_deleting = f"step-{kill.step:08d}" if kill.mode == "rotation" else ""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-c", CHILD, stage, json.dumps(cfg), str(paths.root), stop_deleting],
                                cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)


def _wait_for_moment(proc: subprocess.Popen, kill: Kill, paths: Paths, stage: str, timeout_s: float) -> bool:
    """Sleep until `kill`'s moment, then stop the child there; False if it ended first."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert time.monotonic() < deadline, f"{stage}: {kill} not reached in {timeout_s:.0f} s"
        if kill.mode == "rotation":  # the child stops itself
            pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
            if pid:
                if not os.WIFSTOPPED(status):
                    proc.returncode = os.waitstatus_to_exitcode(status)
                return os.WIFSTOPPED(status)
        elif _reached(kill, progress(paths, stage)):
            time.sleep(kill.delay_s)
            os.kill(proc.pid, signal.SIGSTOP)
            _, status = os.waitpid(proc.pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):  # it had exited meanwhile (and is reaped now)
                proc.returncode = os.waitstatus_to_exitcode(status)
            return os.WIFSTOPPED(status)
        elif proc.poll() is not None:
            return False
        time.sleep(POLL_S)


def kill_at(proc: subprocess.Popen, kill: Kill, paths: Paths, stage: str, timeout_s: float = 120.0) -> tuple[str, dict]:
    """Start the child, stop it at `kill`'s moment and SIGKILL it. Returns where it was (one of the
    constants above) and what it had on disk at that instant."""
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    if not _wait_for_moment(proc, kill, paths, stage, timeout_s):
        return FINISHED, progress(paths, stage)
    seen = progress(paths, stage)  # the child cannot change anything while stopped
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    if kill.mode == "rotation":
        return IN_ROTATION, seen
    return (IN_CHECKPOINT_WRITE if seen["writing"] else IN_FINAL_SAVE if seen["final"] else BETWEEN_WRITES), seen
