"""A full disk (ENOSPC) or an exhausted quota (EDQUOT) at a seeded checkpoint, or at the final save:
the stage stops with a `UserError` that names the folder, says the disk is full and what is kept;
the previous checkpoint still verifies, no temporary directory is left, and once space is freed a
rerun resumes and ends with the weights of an uninterrupted run.

Each refusal is raised in the form the real write gives (checked on a small tmpfs): an `OSError`
from Python's own writes and from `torch.save` into a Python file, and safetensors' error that only
names the errno in its text.
"""

import errno
import os
import random
from pathlib import Path

import pytest
import torch
import transformers.modeling_utils
from safetensors import SafetensorError
from safetensors.torch import load_file

import rlhf.stages.sft
import rlhf.train.checkpoint
from rlhf.config.sft import SFTConfig
from rlhf.errors import UserError
from rlhf.stages.sft import run_sft
from rlhf.train import optimizer_step
from rlhf.train.checkpoint import TRAINER_STATE, checkpoint_problem, list_checkpoints
from rlhf.train.runtime import torch_threads
from tests.faults.projects import fresh, hidden

pytestmark = pytest.mark.faults

SEED = 20240611
SFT = dict(n_layer=1, n_head=2, n_embd=32, n_positions=64, max_seq_len=64, packing=False, batch_size=8,
           micro_batch_size=4, warmup_steps=1, max_steps=10, checkpoint_every=2, keep_checkpoints=2, sample_count=0,
           eval_examples=8)


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """The uninterrupted run's model weights (on one thread, as every test runs: the thread count
    changes the order of float sums)."""
    paths = fresh(world, tmp_path_factory.mktemp("reference"), ["data", "tokenizer"])
    with torch_threads(1):
        run_sft(SFTConfig(**SFT), paths)
    return load_file(paths.sft / "model" / "model.safetensors")


def refuse(monkeypatch, owner, name: str, target, nth: int, error: Exception) -> list[Path]:
    """Make `owner.name` (a writer taking the path or file as its first or second argument) raise
    `error` on its `nth` call whose path satisfies `target`, after writing a few bytes (a disk
    fills mid-file). Returns the paths it was called with that satisfy `target`."""
    real, seen = getattr(owner, name), []

    def write(*args, **kwargs):
        where = next(Path(a.name if hasattr(a, "write") else a) for a in args
                     if isinstance(a, (str, Path)) or hasattr(a, "write"))
        if target(where):
            seen.append(where)
            if len(seen) == nth:
                with open(where, "ab") as f:
                    f.write(b"\0" * 64)
                raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, write)
    return seen


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def safetensors_enospc() -> SafetensorError:
    return SafetensorError(f"Error while serializing: I/O error: {os.strerror(errno.ENOSPC)} (os error {errno.ENOSPC})")


# a write of a checkpoint: (what refuses, its file, the error)
CHECKPOINT_WRITES = {
    "torch.save": (torch, "save", "optimizer.pt", enospc),
    "safetensors": (transformers.modeling_utils, "safe_save_file", "model.safetensors", safetensors_enospc),
    "quota": (rlhf.train.checkpoint, "write_json", TRAINER_STATE,
              lambda: OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))),
}


@pytest.mark.parametrize("writer", list(CHECKPOINT_WRITES))
def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(writer, world, reference, tmp_path, monkeypatch):
    owner, name, file_name, make_error = CHECKPOINT_WRITES[writer]
    nth = random.Random(f"{SEED}-{writer}").randint(2, SFT["max_steps"] // SFT["checkpoint_every"])
    failing, previous = nth * SFT["checkpoint_every"], (nth - 1) * SFT["checkpoint_every"]
    paths = fresh(world, tmp_path, ["data", "tokenizer"])
    error = make_error()
    seen = refuse(monkeypatch, owner, name, lambda p: p.name == file_name and p.parent.name.startswith(".step-"),
                  nth, error)
    with pytest.raises(UserError) as err:
        run_sft(SFTConfig(**SFT), paths)
    (root,) = paths.checkpoints("sft").iterdir()
    assert len(seen) == nth and seen[-1].parent.parent == root  # it failed inside the checkpoint's temp dir
    reason = os.strerror(error.errno if isinstance(error, OSError) else errno.ENOSPC)
    assert str(err.value) == (f"cannot write {root / f'step-{failing:08d}'}: the disk is full ({reason}); "
                              f"the previous checkpoint step-{previous:08d} is kept and the stage resumes from it "
                              "once space is freed")
    assert err.value.__cause__ is error
    assert list_checkpoints(root)[-1].name == f"step-{previous:08d}"
    assert checkpoint_problem(root / f"step-{previous:08d}") is None
    assert not (root / f"step-{failing:08d}").exists() and hidden(paths.checkpoints("sft")) == []
    assert not (paths.sft / "model").exists()

    monkeypatch.undo()  # space freed: the rerun resumes after the kept checkpoint
    steps = []
    monkeypatch.setattr(rlhf.stages.sft, "optimizer_step", lambda *a: steps.append(1) or optimizer_step(*a))
    run_sft(SFTConfig(**SFT), paths)
    assert len(steps) == SFT["max_steps"] - previous
    weights = load_file(paths.sft / "model" / "model.safetensors")
    for k in reference:
        torch.testing.assert_close(weights[k], reference[k], rtol=1e-5, atol=1e-6, msg=k)


def test_a_full_disk_at_the_final_save_keeps_the_checkpoints(world, reference, tmp_path, monkeypatch):
    paths = fresh(world, tmp_path, ["data", "tokenizer"])
    error = safetensors_enospc()
    refuse(monkeypatch, transformers.modeling_utils, "safe_save_file",
           lambda p: p.parent.name.startswith(".model.tmp-"), 1, error)
    with pytest.raises(UserError) as err:
        run_sft(SFTConfig(**SFT), paths)
    assert str(err.value) == (f"cannot write {paths.sft / 'model'}: the disk is full ({os.strerror(errno.ENOSPC)}); "
                              "what was there is kept, and so is the stage's last checkpoint: free space and run the "
                              "stage again")
    assert err.value.__cause__ is error
    assert not (paths.sft / "model").exists() and hidden(paths.sft) == []
    (root,) = paths.checkpoints("sft").iterdir()
    assert not root.name.endswith("-finished")  # not retired: the rerun resumes the last one
    last = list_checkpoints(root)[-1]
    assert last.name == f"step-{SFT['max_steps']:08d}" and checkpoint_problem(last) is None

    monkeypatch.undo()
    steps = []
    monkeypatch.setattr(rlhf.stages.sft, "optimizer_step", lambda *a: steps.append(1) or optimizer_step(*a))
    run_sft(SFTConfig(**SFT), paths)
    assert steps == []  # nothing left to train: only the evaluation and the save
    weights = load_file(paths.sft / "model" / "model.safetensors")
    for k in reference:
        torch.testing.assert_close(weights[k], reference[k], rtol=1e-5, atol=1e-6, msg=k)


def test_another_write_error_is_not_called_a_full_disk(world, tmp_path, monkeypatch):
    paths = fresh(world, tmp_path, ["data", "tokenizer"])
    error = OSError(errno.EIO, os.strerror(errno.EIO))
    refuse(monkeypatch, torch, "save", lambda p: p.name == "optimizer.pt", 1, error)
    with pytest.raises(OSError) as err:
        run_sft(SFTConfig(**SFT), paths)
    assert err.value is error and not isinstance(err.value, UserError)
    assert hidden(paths.checkpoints("sft")) == []
