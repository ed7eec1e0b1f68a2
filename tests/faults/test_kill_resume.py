"""SIGKILL at seeded moments of every trainer, checkpoint writes included: each rerun ends with the
weights, optimizer state and history of an uninterrupted run, and no partial directory is left.

Per trainer: one uninterrupted reference run in this process, then `len(MODES)` trials, each in a
fresh copy of the inputs: train in a child process, SIGKILL it at the moment `kills.kill_plan`
drew, check what it left (every output whole or absent, the newest checkpoint intact), clear the
stage's outputs as `dvc repro` does, and run the stage again here (it resumes from its newest
checkpoint).
"""

import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf.paths import Paths
from rlhf.train.checkpoint import checkpoint_problem, list_checkpoints
from tests.faults import kills
from tests.faults.projects import fresh, hidden

pytestmark = pytest.mark.faults

SEED = 20240611
MODES = ["write", "write", "rotation", "after", "after", "final"]  # 6 kills per trainer, 24 in all
SFT = dict(n_layer=1, n_head=2, n_embd=32, n_positions=64, max_seq_len=64, packing=False, batch_size=8,
           micro_batch_size=4, warmup_steps=2, max_steps=40, checkpoint_every=4, keep_checkpoints=2, log_every=4,
           sample_count=0, eval_examples=8)
REWARD = dict(max_steps=24, batch_size=8, micro_batch_size=4, warmup_steps=2, learning_rate=2e-3, checkpoint_every=3,
              keep_checkpoints=2, log_every=3, max_seq_len=64, norm_examples=8)
DPO = dict(max_steps=18, batch_size=8, micro_batch_size=4, learning_rate=1e-3, warmup_steps=2, eval_batch_size=8,
           checkpoint_every=3, keep_checkpoints=2, log_every=1)
PPO = dict(max_steps=8, rollout_batch_size=8, mini_batch_size=4, micro_batch_size=2, ppo_epochs=2, max_new_tokens=8,
           checkpoint_every=2, keep_checkpoints=2, learning_rate=1e-3, temperature=1.0)
# stage: (config, the artifacts it reads)
STAGES = {"sft": (SFT, ["data", "tokenizer"]), "reward": (REWARD, ["data", "tokenizer", "sft"]),
          "dpo": (DPO, ["data", "tokenizer", "sft"]), "ppo": (PPO, ["data", "tokenizer", "sft", "reward"])}
TIMINGS = ("throughput/", "time/")  # differ from run to run


def checkpoint_steps(cfg: dict) -> list[int]:
    every, total = cfg["checkpoint_every"], cfg["max_steps"]
    return sorted(set(range(every, total + 1, every)) | {total})


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model directory or checkpoint: safetensors files and the optimizer state."""
    found = {f"{f.relative_to(folder)}:{k}": v
             for f in sorted(folder.rglob("*.safetensors")) for k, v in load_file(f).items()}

    def walk(obj, name):
        if isinstance(obj, torch.Tensor):
            found[name] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{name}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{name}/{i}")

    if (folder / "optimizer.pt").is_file():
        walk(torch.load(folder / "optimizer.pt", weights_only=True), "optimizer.pt")
    return found


def assert_same_tensors(expected: Path, found: Path, label: str) -> None:
    a, b = tensors(expected), tensors(found)
    assert a.keys() == b.keys(), label
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{label}: {k}: {m}")


def learning(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(TIMINGS)}


def live_roots(paths: Paths, stage: str) -> list[Path]:
    base = paths.checkpoints(stage)
    return [r for r in base.iterdir() if not r.name.endswith("-finished")] if base.is_dir() else []


def check_what_the_kill_left(paths: Paths, ref: Paths, stage: str, label: str) -> None:
    """Every output is whole or absent; the newest checkpoint (the one a rerun resumes) is intact."""
    out, expected = getattr(paths, stage), getattr(ref, stage)
    left = {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.is_dir() else set()
    assert left <= {p.name for p in expected.iterdir()}, f"{label}: {left}"
    if "model" in left:
        assert_same_tensors(expected / "model", out / "model", label)
    if "history.jsonl" in left:  # PPO's statistics of every iteration
        lines = [len((folder / "history.jsonl").read_text().splitlines()) for folder in (out, expected)]
        assert lines[0] == lines[1], label
    for root in live_roots(paths, stage):
        ckpts = list_checkpoints(root)
        if ckpts:
            assert checkpoint_problem(ckpts[-1]) is None, f"{label}: {ckpts[-1]}: {checkpoint_problem(ckpts[-1])}"


def check_the_rerun(paths: Paths, ref: Paths, out, ref_out, stage: str, label: str) -> None:
    """The same weights, optimizer state, history and metrics as the reference; the checkpoints
    retired and intact; nothing temporary left."""
    cfg = STAGES[stage][0]
    assert_same_tensors(getattr(ref, stage) / "model", getattr(paths, stage) / "model", label)
    assert len(out.history) == len(ref_out.history), label
    for row, ref_row in zip(out.history, ref_out.history):
        assert learning(row) == pytest.approx(learning(ref_row), rel=1e-5, abs=1e-6, nan_ok=True), label
    base = paths.checkpoints(stage)
    (finished,) = ref.checkpoints(stage).iterdir()
    assert [r.name for r in base.iterdir()] == [finished.name], label  # retired: the next run trains afresh
    ckpts = list_checkpoints(base / finished.name)
    partial = {p.name: sorted(f.name for f in p.iterdir()) for p in (base / finished.name).iterdir() if p not in ckpts}
    assert not partial, f"{label}: partial directories left beside the checkpoints: {partial}"
    assert all(checkpoint_problem(c) is None for c in ckpts), label
    assert ckpts[-1].name == f"step-{cfg['max_steps']:08d}", label
    assert_same_tensors(list_checkpoints(finished)[-1], ckpts[-1], label)
    assert hidden(base) == [] and hidden(getattr(paths, stage)) == [], label
    assert learning(out.metrics) == pytest.approx(learning(ref_out.metrics), rel=1e-5, abs=1e-6, nan_ok=True), label


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_at_seeded_moments_resumes_to_the_uninterrupted_run(stage, world, tmp_path):
    cfg, inputs = STAGES[stage]
    ref = fresh(world, tmp_path / "reference", inputs)
    ref_out = kills.run_stage(stage, cfg, ref)
    rng = random.Random(SEED + list(STAGES).index(stage))
    plan = kills.kill_plan(rng, MODES, checkpoint_steps(cfg), cfg["keep_checkpoints"])

    def child(i: int):
        paths = fresh(world, tmp_path / f"trial-{i}", inputs)
        return kills.start(stage, cfg, paths, plan[i], paths.root / "child.log"), paths

    following, problems, table = child(0), [], []
    proc = None
    try:
        for i, kill in enumerate(plan):
            proc, paths = following
            following = child(i + 1) if i + 1 < len(plan) else None  # it imports while this trial runs
            where, seen = kills.kill_at(proc, kill, paths, stage)
            label = f"{stage} trial {i} ({kill}) stopped at: {where} {seen}"
            table.append((where, label))
            if where == kills.FINISHED:
                assert proc.returncode == 0, f"{label}\n{(paths.root / 'child.log').read_text()}"
            try:
                check_what_the_kill_left(paths, ref, stage, label)
                shutil.rmtree(getattr(paths, stage), ignore_errors=True)  # as `dvc repro` clears a stage's outputs
                out = kills.run_stage(stage, cfg, paths)
                check_the_rerun(paths, ref, out, ref_out, stage, label)
            except AssertionError as err:  # every trial runs; the failed ones are reported together
                problems.append(str(err))
                continue
            shutil.rmtree(paths.root)
    finally:
        for left in (proc, following and following[0]):
            if left is not None and left.poll() is None:
                left.kill()
                left.wait()
    print("\n".join(label for _, label in table))
    assert not problems, "\n\n".join(problems)
    # the seeded moments come before the end of the run: at most one kill may find it finished
    assert sum(where == kills.FINISHED for where, _ in table) <= 1, "\n".join(label for _, label in table)
