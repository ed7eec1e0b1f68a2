"""Where a worker's timed steps spend their time, by kind of operation (used by
benchmarks/step_profile.py).

`profiled(run, warmup)` runs a side's trainer (`RUNNERS[...]` of project.py, peer.py or
peer_ppo.py) under torch.profiler. Every `StepClock.tick` also leaves a profiler mark, so the
window is exactly the timed steps: from the end of the last warm-up step to the end of the last
step. Each operator's own time (`self_cpu_time_total`: its children excluded, so nothing is counted
twice) that starts inside the window goes to one kind:

- matmul: the weight and batched matrix products (`aten::mm`, `addmm`, `addmm_`, `bmm`, `baddbmm`,
  ...), forward and backward, with the FLOPs the profiler counts for them (and 2 M N K for an
  in-place `addmm_`, which it does not count);
- attention: the fused attention kernels (`scaled_dot_product_*`, forward and backward);
- optimizer: AdamW (fused or foreach kernels) and the optimizer step's own code;
- other ops: every other operator (norms, activations, softmax, copies, fills, losses, sampling);
- outside ops: the window minus all of the above: Python, the framework's own code between
  operators, waits.

The profiler adds a few microseconds to every operator, so profiled steps are slower than the
benchmark's timed ones, most where operators are small and many (PPO's sampling); the shares of the
large kinds, and the matmul FLOP rate, are what this is for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from benchmarks.trl_peer.measure import StepClock

KINDS = ("matmul", "attention", "optimizer", "other ops", "outside ops")
MATMUL_OPS = frozenset({"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::addbmm",
                        "aten::_addmm_activation", "aten::matmul", "aten::linear", "aten::addmv", "aten::mv"})
MARK = "step_profile::step_end"
OTHER = "other:"  # split's keys of the largest other operators: OTHER + operator name
TOP_OTHERS = 6


def kind(name: str) -> str:
    """The kind of operator `name` (a profiler event name)."""
    if name in MATMUL_OPS:
        return "matmul"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    if "adam" in name.lower() or name.startswith(("Optimizer.", "aten::_foreach_")):
        return "optimizer"
    return "other ops"


def inplace_addmm_flops(e: Any) -> float:
    """2 M N K of an in-place `addmm_` (self (M, N), mat1 (M, K), mat2 (K, N)), whose FLOPs the profiler
    leaves at 0 (autograd accumulates a tied weight's second gradient with it); 0 for other events."""
    shapes = getattr(e, "input_shapes", None) or []
    if e.name != "aten::addmm_" or len(shapes) < 3 or len(shapes[1]) != 2 or len(shapes[2]) != 2:
        return 0.0
    (m, k), (_, n) = shapes[1], shapes[2]
    return 2.0 * m * n * k


@contextmanager
def step_marks() -> Iterator[None]:
    """While inside, every `StepClock.tick` also records a profiler event named MARK."""
    original = StepClock.tick

    def tick(self: StepClock) -> None:
        original(self)
        with torch.profiler.record_function(MARK):
            pass

    StepClock.tick = tick
    try:
        yield
    finally:
        StepClock.tick = original


def split(events: list[Any], warmup: int) -> dict[str, float]:
    """Seconds per kind over the timed window of profiler `events` (FunctionEvent: name,
    time_range.start in us, self_cpu_time_total in us, flops), the window's seconds, its steps, the
    matmuls' FLOPs, and the seconds of the TOP_OTHERS largest other operators (keys OTHER + name)."""
    marks = sorted(e.time_range.start for e in events if e.name == MARK)
    assert warmup >= 1 and len(marks) > warmup, "the window needs a warm-up step and a timed one"
    lo, hi = marks[warmup - 1], marks[-1]
    seconds = dict.fromkeys(KINDS, 0.0)
    others: dict[str, float] = {}
    flops = 0.0
    for e in events:
        if e.name == MARK or not lo <= e.time_range.start < hi:
            continue
        k = kind(e.name)
        seconds[k] += e.self_cpu_time_total / 1e6
        if k == "matmul":
            flops += e.flops or inplace_addmm_flops(e)
        elif k == "other ops":
            others[e.name] = others.get(e.name, 0.0) + e.self_cpu_time_total / 1e6
    window = (hi - lo) / 1e6
    seconds["outside ops"] = max(window - sum(seconds.values()), 0.0)
    top = dict(sorted(others.items(), key=lambda item: -item[1])[:TOP_OTHERS])
    return {**seconds, "window": window, "steps": float(len(marks) - warmup), "matmul_flops": flops,
            **{OTHER + name: t for name, t in top.items()}}


def profiled(run: Callable[[], Any], warmup: int) -> tuple[Any, dict[str, float]]:
    """`run()`'s result and the `split` of its timed steps."""
    from torch.profiler import ProfilerActivity, profile

    with step_marks(), profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        result = run()
    return result, split(list(prof.events()), warmup)
