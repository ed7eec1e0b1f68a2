"""Optimizer, learning-rate schedule and the one optimizer step shared by every trainer.

`optimizer_step` runs the forward/backward passes of all micro-batches of one optimizer step and
normalises the loss over the *whole step*: each micro-batch contributes
    sum of its per-unit losses / (number of units in the whole step)
where a unit is a loss token (SFT, PPO) or a pair (reward model, DPO). Summed over micro-batches
this is exactly the loss of one big batch, so accumulation cannot change the gradient; the
per-micro-batch mean of TRL issue 2175 would overweight the tokens of short micro-batches.

Divergence is never silent: a step whose loss or gradient norm is NaN or infinite is not applied
(`optimizer_step`), and the trainer's `TrainingRun.guard` then stops the stage with a
`NonFiniteError` (`nonfinite: stop`) or counts the skipped step (`nonfinite: skip`).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from rlhf.errors import UserError
from rlhf.train.sharding import is_sharded

Schedule = Literal["cosine", "linear", "constant"]
NonFinite = Literal["stop", "skip"]  # what a trainer does with a non-finite step (TrainConfig.nonfinite)

# loss_fn(model, micro_batch, units_in_step) -> (loss share of this micro-batch, metric means)
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor], float], tuple[torch.Tensor, dict[str, Any]]]


class NonFiniteError(UserError):
    """Training diverged: a loss, gradient norm or reward was NaN or infinite. The message is the
    one the user reads: stage, optimizer step, quantities, what was kept and what to change."""


def nonfinite(quantities: dict[str, float]) -> dict[str, float]:
    """The entries of `quantities` that are NaN or infinite, in their order."""
    return {k: float(v) for k, v in quantities.items() if not math.isfinite(v)}


def check_finite(stage: str, step: int, quantities: dict[str, float], policy: NonFinite = "stop",
                 kept_step: int | None = None, fix: str | None = None) -> bool:
    """True when every quantity of optimizer step `step` (1-based) is finite. Otherwise False with
    `policy` "skip" (the caller skips the step), or, with "stop", a `NonFiniteError` naming the
    stage, the step, each non-finite quantity and its value, the newest checkpoint `kept_step`
    (None: none written yet) and `fix` (default: lower the learning rate or skip such steps)."""
    bad = nonfinite(quantities)
    if not bad:
        return True
    if policy == "skip":
        return False
    named = ", ".join(f"{k} ({v})" for k, v in bad.items())
    kept = (f"the last good checkpoint (step {kept_step}) is kept" if kept_step is not None
            else "no checkpoint was written before it")
    fix = fix or f"lower {stage}.learning_rate"
    raise NonFiniteError(f"{stage}: non-finite {named} at step {step}; {kept}, no model was written; "
                         f"{fix} or set {stage}.nonfinite: skip")


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay only on matrices (>= 2-D), not on biases,
    norms or scalars (nanoGPT's grouping). Parameter order follows `model.named_parameters()`, so a
    rebuilt model gets the same groups and its saved optimizer state lines up."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert named, "no trainable parameters"
    groups = [
        {"params": [p for _, p in named if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fusable([p for _, p in named]))


def fusable(params: list[torch.nn.Parameter]) -> bool:
    """Whether AdamW's fused kernel (one kernel for the whole update instead of a dozen per
    parameter group) takes these parameters: floating point, on the CPU or CUDA. Its step equals
    the unfused one to float rounding (tests/unit/test_train_machinery.py)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def optimizer_from(model: torch.nn.Module, cfg: Any, learning_rate: float | None = None) -> torch.optim.AdamW:
    """`build_optimizer` with every AdamW field of a `TrainConfig` (`learning_rate` overrides the
    config's, e.g. for PPO's critic)."""
    lr = cfg.learning_rate if learning_rate is None else learning_rate
    return build_optimizer(model, lr, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)


def scheduler_from(optimizer: torch.optim.Optimizer, cfg: Any, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """`build_scheduler` with the warmup, schedule and final ratio of a `TrainConfig`."""
    return build_scheduler(optimizer, total_steps, min(cfg.warmup_steps, total_steps), cfg.schedule, cfg.min_lr_ratio)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: Schedule, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warmup over
    `warmup_steps`, then cosine or linear decay to `min_lr_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    schedule: Schedule = "cosine", min_lr_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` following `lr_factor`. Its state_dict holds only numbers (safe to reload).

    Keep it out of `accelerator.prepare`: accelerate would step it once per process."""
    assert total_steps > 0 and 0 <= warmup_steps <= total_steps, (total_steps, warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, schedule, min_lr_ratio)
    )


def advance(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """`scheduler.step()`, also after a step whose update was skipped as non-finite: torch's
    warning of a call before `optimizer.step()` is then expected, not the call-order slip it means."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        scheduler.step()


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    accelerator: Any,
    micro_batches: Sequence[dict[str, torch.Tensor]],
    loss_fn: LossFn,
    units: Callable[[dict[str, torch.Tensor]], int | float],
    max_grad_norm: float | None = 1.0,
) -> dict[str, float]:
    """One optimizer step over this process's micro-batches; returns step metrics.

    `units(mb)` counts the loss units of a micro-batch (e.g. `mb["loss_mask"][:, 1:].sum()`).
    `loss_fn(model, mb, n)` must return `(sum of per-unit losses in mb / n, metrics)` with metrics
    as means over the units of `mb`; they come back as exact means over the whole step.
    With P data-parallel processes, `n` = (units over all processes) / P: DDP averages gradients
    over processes, which turns the P shares back into one sum over all units / all units.
    Returns `loss` (the step loss) and the metric means, both over every process's units, as one
    process would report them, `grad_norm` (before clipping) and `lr`.

    A step whose `loss` or `grad_norm` is NaN or infinite leaves the parameters and the optimizer
    state as they were (gradients zeroed); the scheduler still advances, so every later step keeps
    the learning rate it has in an unskipped run. The caller decides to stop or go on
    (`TrainingRun.guard`). With P processes all decide alike: `grad_norm` is that of the
    synchronised gradients, which a NaN loss on any one process makes NaN on all.
    """
    assert micro_batches, "an optimizer step needs at least one micro-batch"
    # 1. count the loss units of the whole step, on every process
    counts = [float(units(mb)) for mb in micro_batches]
    local = torch.tensor(sum(counts), device=accelerator.device)
    total = float(accelerator.reduce(local, reduction="sum")) if accelerator.num_processes > 1 else float(local)
    assert total > 0, "an optimizer step without any loss unit (all masks empty?)"
    n = total / accelerator.num_processes
    # 2. forward + backward each micro-batch; gradients sync only on the last one (DDP)
    step_loss = 0.0
    sums: dict[str, float] = {}
    for i, (mb, count) in enumerate(zip(micro_batches, counts)):
        mb = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in mb.items()}
        sync = i == len(micro_batches) - 1 or is_sharded(model)  # FSDP: reduce-scatter every time
        with (contextlib.nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
            loss, metrics = loss_fn(model, mb, n)
            accelerator.backward(loss)
        step_loss += float(loss.detach())
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * count
    # 3. clip, step only when finite, schedule
    norm = float(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf")))
    if not nonfinite({"loss": step_loss, "grad_norm": norm}):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    lr = optimizer.param_groups[0]["lr"]
    if scheduler is not None:
        advance(scheduler)
    # 4. the metrics of the whole step: over every process's units (one all-reduce)
    if accelerator.num_processes > 1:
        sums, step_loss = summed_over_processes(accelerator, sums, step_loss)
        step_loss /= accelerator.num_processes
        units_total = total
    else:
        units_total = sum(counts)
    out = {k: v / units_total for k, v in sums.items()} if units_total else {}
    out.update(loss=step_loss, grad_norm=norm, lr=lr)
    return out


def summed_over_processes(accelerator: Any, sums: dict[str, float], extra: float) -> tuple[dict[str, float], float]:
    """`sums` and `extra`, each summed over the data-parallel processes in one all-reduce (float64,
    so that sums of many shares lose nothing). Every process must pass the same keys."""
    keys = sorted(sums)
    local = torch.tensor([sums[k] for k in keys] + [extra], dtype=torch.float64, device=accelerator.device)
    *values, total = accelerator.reduce(local, reduction="sum").tolist()
    return dict(zip(keys, values)), total


class Throughput:
    """Tokens/s and samples/s over the training steps (wall clock, excluding evaluation), named as
    docs/metrics.md says: `throughput/tokens_per_s`, `throughput/<unit>_per_s`, `time/train_s`."""

    def __init__(self, unit: str) -> None:
        self.unit = unit  # what a sample is: "dialogues", "pairs"
        self.tokens = self.samples = 0
        self.seconds = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self, tokens: int, samples: int) -> None:
        assert self._t0 is not None, "Throughput.stop before start"
        self.seconds += time.perf_counter() - self._t0
        self.tokens += tokens
        self.samples += samples
        self._t0 = None

    def metrics(self) -> dict[str, float]:
        s = max(self.seconds, 1e-9)
        return {"throughput/tokens_per_s": self.tokens / s, f"throughput/{self.unit}_per_s": self.samples / s,
                "time/train_s": self.seconds}
