"""The scaffolding every trainer's loop shares, written once: resume or start, periodic
checkpoints of any number of models and optimizers, the final save, and retiring the checkpoints.

    run = TrainingRun(paths.checkpoints("sft"), [input files, upstream model dirs], cfg, accelerator)
    model = load_causal_lm(run.resume_dir or base_dir)        # the weights are an HF directory
    optimizers = {"model": optimizer_from(model, cfg)}
    schedulers = {"model": scheduler_from(optimizers["model"], cfg, total_steps)}
    state = run.restore(optimizers, schedulers)               # {"step": 0, "history": []} afresh
    for step in range(state["step"], total_steps):
        stats = optimizer_step(...)
        run.guard(step + 1, {"loss": stats["loss"], "grad_norm": stats["grad_norm"]})  # NaN: stop or skip
        run.log(history, {"step": step + 1, ...})           # every log_every steps; heard live
        ...
        run.checkpoint(step + 1, total_steps, {"": model}, optimizers, schedulers, {"history": history})
    run.finish(out_dir, model, tokenizer)                     # final model; SKIPPED gone; retired

A checkpoint is written every `cfg.checkpoint_every` steps and after the last one, keeping the
newest `cfg.keep_checkpoints`. A run resumes only checkpoints of the same inputs (the folder is
named after their digest) and the same stage config (`find_resumable`).

`guard` is where divergence stops a run: with `cfg.nonfinite: stop` a NaN or infinite loss,
gradient norm or score raises `NonFiniteError` before that step is checkpointed, so the newest
checkpoint holds finite weights, stays where it is, and no model is written; with `skip` the step
(which `optimizer_step` did not apply) is counted in `skipped`, saved with every checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf.stage import SKIPPED, heard
from rlhf.train.checkpoint import (
    find_resumable,
    latest_checkpoint,
    load_checkpoint,
    retire_checkpoints,
    run_checkpoint_root,
    save_checkpoint,
    save_model_dir,
)
from rlhf.train.optim import check_finite
from rlhf.train.sharding import full_weights

class TrainingRun:
    """One run of a training stage and its checkpoints under `<base>/<inputs digest>`."""

    def __init__(self, base: Path, inputs: list[Path], cfg: Any, accelerator: Any) -> None:
        self.cfg, self.accelerator = cfg, accelerator
        self.root = run_checkpoint_root(base, inputs, remove_others=accelerator.is_main_process)
        if accelerator.is_main_process:
            find_resumable(self.root, cfg)  # drops checkpoints of another config
        accelerator.wait_for_everyone()
        self.resume_dir: Path | None = latest_checkpoint(self.root)  # None: start afresh
        self.stage = Path(base).name  # `paths.checkpoints(stage)` ends with the stage's name
        self.saved_step: int | None = None  # step of the newest checkpoint of this run, resumed or written
        self.skipped = 0  # optimizer steps skipped as non-finite (`nonfinite: skip`), resumes included

    def restore(self, optimizers: dict[str, Any], schedulers: dict[str, Any]) -> dict[str, Any]:
        """The trainer state to continue from (optimizers, schedules and RNG restored in place)."""
        if self.resume_dir is None:
            return {"step": 0, "history": []}
        state = load_checkpoint(self.resume_dir, optimizers, schedulers)
        self.saved_step, self.skipped = state["step"], state.get("skipped_steps", 0)
        return state

    def guard(self, step: int, quantities: dict[str, float], fix: str | None = None) -> bool:
        """Whether optimizer step `step` (1-based) was finite: every quantity (loss, gradient
        norms, PPO's scores) neither NaN nor infinite. If not, `cfg.nonfinite: stop` raises
        `NonFiniteError` (naming the stage, the step, the quantities and the kept checkpoint;
        `fix` says what to change, default: lower the learning rate); `skip` counts the step."""
        ok = check_finite(self.stage, step, quantities, self.cfg.nonfinite, self.saved_step, fix)
        self.skipped += not ok
        return ok

    def log(self, history: list[dict[str, float]], row: dict[str, float]) -> None:
        """Append a history row (`{"step": s, name: value}`) and hand it to the listener, if any."""
        history.append(row)
        if self.accelerator.is_main_process:
            heard(row)

    def checkpoint(self, step: int, total_steps: int, models: dict[str, Any], optimizers: dict[str, Any],
                   schedulers: dict[str, Any], state: dict[str, Any], tokenizer: Any = None) -> None:
        """Save after optimizer step `step` when it is due (every `checkpoint_every`, and the last)."""
        if step % self.cfg.checkpoint_every == 0 or step == total_steps:
            save_checkpoint(self.root, step, self.accelerator, models, optimizers, schedulers, self.cfg,
                            {**state, "skipped_steps": self.skipped}, tokenizer=tokenizer,
                            keep_last=self.cfg.keep_checkpoints)
            self.saved_step = step

    def finish(self, out_dir: Path, model: Any, tokenizer: Any = None) -> None:
        """Write the final model atomically (main process), remove a SKIPPED marker an earlier
        run with `enabled: false` left beside it, and retire the checkpoints so that a later run
        trains afresh."""
        weights = full_weights(model)  # a sharded model, gathered whole (every process takes part)
        if self.accelerator.is_main_process:
            save_model_dir(out_dir, self.accelerator.unwrap_model(model), tokenizer, self.cfg, weights=weights)
            (Path(out_dir).parent / SKIPPED).unlink(missing_ok=True)
            retire_checkpoints(self.root)
        self.accelerator.wait_for_everyone()
