"""Atomic checkpoints that a killed stage resumes from, bit for bit on CPU.

A checkpoint is a Hugging Face model directory (safetensors) with the training state beside it:

    <root>/step-00000120/
        config.json, model.safetensors, tokenizer files   the model (`from_pretrained` loads it)
        stage_config.json                                 the stage config that produced it
        optimizer.pt                                      optimizer + scheduler state dicts
        rng_state.pt                                      Python, NumPy, torch (and CUDA) RNG states
        checksums.json                                    sha256 of every file above
        trainer_state.json                                step, data position, history, ...

Every directory is written to a temporary sibling and renamed into place (`os.replace`), so a
SIGKILL leaves either the previous checkpoint or the new one, never half of one. The `.pt` files
hold only tensors, numbers and strings and are read with `torch.load(weights_only=True)` (no
arbitrary pickle). Resuming = load the model from the latest checkpoint directory, rebuild the
optimizer over it, then `load_checkpoint` restores the rest; the data order is a function of the
step (`rlhf.train.batching.BatchOrder`). A resume verifies the checksums first: a checkpoint with
a missing, truncated or altered file is skipped (with a warning) for the one before it. A write
refused for want of space (ENOSPC, EDQUOT) is a `UserError` naming the folder and what is kept.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from rlhf.errors import UserError
from rlhf.files import CHECKSUMS, atomic_dir, checksum_problem, file_checksums, write_json
from rlhf.train.runtime import quiet_transformers, rng_state, set_rng_state
from rlhf.train.sharding import full_optimizer_state, full_weights, sharded_optimizer_state

STAGE_CONFIG = "stage_config.json"
TRAINER_STATE = "trainer_state.json"
_PREFIX = "step-"


def _disk_full(err: BaseException | None) -> str | None:
    """Why the disk refused a write, when `err` or an exception it came from is such a refusal: an
    `OSError` with errno ENOSPC or EDQUOT, or safetensors' error, which only names the errno in its
    text ("... (os error 28)"); else None."""
    while err is not None:
        for code in (errno.ENOSPC, errno.EDQUOT):
            if (isinstance(err, OSError) and err.errno == code) or f"(os error {code})" in str(err):
                return os.strerror(code)
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def _full_disk_is_users(target: Path, kept: str) -> Iterator[None]:
    """Raise a write of `target` refused for want of space as a `UserError` naming `target` and
    what is `kept` (`atomic_dir` inside has already removed the partial copy)."""
    try:
        yield
    except Exception as err:
        reason = _disk_full(err)
        if reason is None:
            raise
        raise UserError(f"cannot write {target}: the disk is full ({reason}); {kept}") from err


def save_pretrained(model: Any, path: Path, weights: dict[str, torch.Tensor] | None = None) -> None:
    """`model.save_pretrained(path)`, from `weights` (the full tensors of a sharded model,
    `rlhf.train.sharding.full_weights`) when given."""
    model.save_pretrained(path, **({} if weights is None else {"state_dict": weights}))


def save_model_dir(target: str | Path, model: Any, tokenizer: Any = None, config: Any = None,
                   extra_json: dict[str, Any] | None = None, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Atomically write `model.save_pretrained` (+ tokenizer, + `stage_config.json` from a pydantic
    config, + extra JSON files `{name: data}`) to `target`. Returns `target`. A full disk leaves
    `target` as it was and raises a `UserError`: a stage's final save comes before its checkpoints
    are retired, so a rerun resumes from the last one. `weights`: those of a sharded model."""
    kept = "what was there is kept, and so is the stage's last checkpoint: free space and run the stage again"
    with _full_disk_is_users(Path(target), kept), atomic_dir(target) as tmp, quiet_transformers():
        save_pretrained(model, tmp, weights)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if config is not None:
            write_json(tmp / STAGE_CONFIG, config.model_dump(mode="json"))
        for name, data in (extra_json or {}).items():
            write_json(tmp / name, data)
        write_json(tmp / CHECKSUMS, file_checksums(tmp))  # later stages verify them (rlhf.files)
    return Path(target)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (a complete one has its trainer state)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def inputs_digest(inputs: Iterable[str | Path]) -> str:
    """sha256 over the relative names and bytes of every input file; a directory contributes its
    files in sorted order, a missing path its name. Identifies the data and upstream models a run
    trained on."""
    h = hashlib.sha256()
    for top in map(Path, inputs):
        if not top.exists():
            h.update(f"{top.name}: missing\0".encode())
            continue
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for f in files:
            h.update(f"{top.name}/{f.relative_to(top) if f != top else ''}\0".encode())
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def run_checkpoint_root(base: str | Path, inputs: Iterable[str | Path], remove_others: bool = True) -> Path:
    """`<base>/<digest of the inputs>`: a run resumes only checkpoints made from the same data and
    upstream models (`find_resumable` checks the stage config). Folders of other inputs under
    `base` can never be resumed again and are removed (pass `remove_others` on the main process)."""
    base = Path(base)
    root = base / inputs_digest(inputs)[:16]
    if remove_others and base.is_dir():
        for p in base.iterdir():
            if p != root and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
    return root


def retire_checkpoints(root: str | Path) -> Path | None:
    """After a run finished: rename `root` to `<root>-finished`, so that a later run (changed code,
    or a forced rerun) trains afresh instead of resuming at the last step. The checkpoints stay
    readable there until the next run of the stage starts. Returns the new path, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    done = root.with_name(f"{root.name}-finished")
    shutil.rmtree(done, ignore_errors=True)
    os.replace(root, done)
    return done


def checkpoint_problem(ckpt: str | Path) -> str | None:
    """What is wrong with a checkpoint's files (None: every checksum matches and its trainer state
    reads). A checkpoint written before checksums existed is only checked for its trainer state."""
    ckpt = Path(ckpt)
    try:
        json.loads((ckpt / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"unreadable trainer state ({err})"
    return checksum_problem(ckpt)


def find_resumable(root: str | Path, config: Any) -> Path | None:
    """The latest intact checkpoint under `root` written with the same stage config, or None.

    Checkpoints of a different config (changed params) are removed with a warning: resuming them
    would mix two runs. A checkpoint whose files fail their checksums is removed with a warning
    naming the file, and the one before it is used. Leftover temporary directories of a killed save
    are removed too.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    for p in root.iterdir():
        if p.name.startswith("."):
            shutil.rmtree(p, ignore_errors=True)
    ckpt = None
    for candidate in reversed(list_checkpoints(root)):
        problem = checkpoint_problem(candidate)
        if problem is None:
            ckpt = candidate
            break
        warnings.warn(f"{candidate} is corrupt: {problem}; resuming from the checkpoint before it", stacklevel=2)
        shutil.rmtree(candidate, ignore_errors=True)
    if ckpt is None:
        return None
    saved = json.loads((ckpt / STAGE_CONFIG).read_text(encoding="utf-8"))
    if saved != config.model_dump(mode="json"):
        warnings.warn(f"{root}: checkpoints were written with another config; starting afresh", stacklevel=2)
        shutil.rmtree(root)
        return None
    return ckpt


def save_checkpoint(root: str | Path, step: int, accelerator: Any, models: dict[str, Any], optimizers: dict[str, Any],
                    schedulers: dict[str, Any], config: Any, state: dict[str, Any], tokenizer: Any = None,
                    keep_last: int = 2) -> Path:
    """Save step `step` under `root` (main process writes; all processes wait) and keep the
    `keep_last` newest checkpoints. `models` maps a sub-directory to a model with `save_pretrained`
    ("" is the checkpoint directory itself, so the main model loads with `from_pretrained(ckpt)`);
    `optimizers` and `schedulers` map names to objects with state dicts (a scheduler may be None).
    `state` must be JSON-serialisable (history, data position). A full disk raises a `UserError`
    and leaves the previous checkpoints as they were. Sharded models and their optimizers are
    gathered whole first (every process takes part), so the files are those of a one-process run."""
    ckpt = Path(root) / f"{_PREFIX}{step:08d}"
    weights = {sub: full_weights(model) for sub, model in models.items()}  # None: not sharded
    optimizer_states = {k: full_optimizer_state(o) for k, o in optimizers.items()}
    if accelerator.is_main_process:
        previous = latest_checkpoint(root)
        kept = (f"the previous checkpoint {previous.name} is kept and the stage resumes from it once space is freed"
                if previous is not None else "there is no earlier checkpoint: free space and run the stage again")
        with _full_disk_is_users(ckpt, kept), atomic_dir(ckpt) as tmp, quiet_transformers():
            for sub, model in models.items():
                (tmp / sub).mkdir(parents=True, exist_ok=True)
                save_pretrained(accelerator.unwrap_model(model), tmp / sub, weights[sub])
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            write_json(tmp / STAGE_CONFIG, config.model_dump(mode="json"))
            # through Python files: torch's own writer reports a full disk only as "unexpected pos"
            with (tmp / "optimizer.pt").open("wb") as f:
                torch.save({"optimizers": optimizer_states,
                            "schedulers": {k: s.state_dict() for k, s in schedulers.items() if s is not None}}, f)
            with (tmp / "rng_state.pt").open("wb") as f:
                torch.save(rng_state(), f)
            write_json(tmp / CHECKSUMS, file_checksums(tmp, skip=[TRAINER_STATE]))  # the state comes after
            write_json(tmp / TRAINER_STATE, {**state, "step": step})  # last: marks it complete
        for old in list_checkpoints(root)[:-keep_last]:
            # renamed to a dot-name first: a kill mid-delete leaves a folder that is no checkpoint
            # and that the next resume removes (find_resumable drops dot-entries)
            hidden = old.with_name(f".{old.name}.old")
            os.replace(old, hidden)
            shutil.rmtree(hidden, ignore_errors=True)
    accelerator.wait_for_everyone()
    return ckpt


def load_checkpoint(ckpt: str | Path, optimizers: dict[str, Any], schedulers: dict[str, Any]) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states from `ckpt`; return its trainer state (with
    `step`). The models themselves are loaded from `ckpt` by the caller (HF directories). The
    optimizer state is whole in the file; an optimizer of a sharded model takes its own shard."""
    ckpt = Path(ckpt)
    saved = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(sharded_optimizer_state(optimizer, saved["optimizers"][name]))
    for name, scheduler in schedulers.items():
        if scheduler is not None:
            scheduler.load_state_dict(saved["schedulers"][name])
    set_rng_state(torch.load(ckpt / "rng_state.pt", map_location="cpu", weights_only=True))
    return json.loads((ckpt / TRAINER_STATE).read_text(encoding="utf-8"))
