"""What is measured, and how.

- Step time: the wall clock between the ends of consecutive optimizer steps (PPO: iterations), so
  it includes everything a trainer does per step (batch collation, forward, backward, clipping,
  the optimizer, its own metrics and callbacks). The WARMUP_STEPS first steps are not timed.
- Model FLOPs: 6 N per trained token (forward + backward) and 2 N per forward-only token (Kaplan
  et al. 2020), where N counts the parameters a token's matmuls pass through: every parameter but
  the token and position embeddings, plus the tied output projection d x V of a language model
  (it is a matmul on every position, a third of the FLOPs at these sizes) or the scalar head of a
  reward model. Attention's T^2 terms are left out, as in the usual MFU definition. Each side is
  credited with the work it does: a side that runs the output projection on the positions its loss
  reads only, a pair's shared prompt once, or a reward model's last-block MLP at the positions
  its head reads only, is counted for those positions and tokens only.
- Peak: the best `torch.matmul` rate of large square matrices on the run's device (this machine's
  CPU with the same threads, or its GPU), in the run's precision (fp32, or bf16 for a bf16 autocast
  run, whose matmuls run in bf16), before and after all runs, or a worker's `host_probe` where that
  is higher (a slow spell of the host during both peak measurements would otherwise set MFU over
  100%).
- Peak memory: `ru_maxrss` of the worker process, which runs one trainer on one side; on a GPU,
  the most GPU memory its tensors held (`torch.cuda.max_memory_allocated`).
- On a GPU every step end waits for the device (`torch.cuda.synchronize`), so a step is timed when
  its kernels have run, not when they were queued.
- Host speed: a shared machine's CPU can run twice as fast in one minute as in the next. Every
  worker measures the best rate of a small matmul (`host_probe`, about 0.1 s) just before and just
  after its run; their mean is the host's speed during that run. Dividing a run's samples/s by it
  cancels a speed change that slows the run and the probe alike; what it cannot cancel (a
  neighbour that takes memory bandwidth, not cycles) shows as a spread between repeats.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class Result:
    """What a worker reports about one trainer on one side (written as JSON)."""

    side: str  # "project" or "trl"
    trainer: str  # "sft", "reward", "dpo", "ppo"
    size: str
    step_seconds: list[float]  # timed steps only
    samples_per_step: int  # sequences (SFT), pairs (reward, DPO), episodes (PPO)
    tokens_per_step: int  # tokens of the step's sequences, a shared prompt counted per sequence (PPO: prompt + response of each episode)
    flops_per_step: float  # nominal model FLOPs (module docstring)
    losses: list[float]  # of every step, warm-up included: losses[0] is step 1
    metrics: dict[str, float] = field(default_factory=dict)  # step-1 diagnostics to compare
    rss_mib: float = 0.0
    gpu_mib: float = 0.0  # on a GPU: the most memory its tensors held
    # PPO only: seconds per timed iteration in sampling, in scoring (teacher-forced passes, rewards,
    # GAE) and in the update, and the tokens sampled per iteration
    generate_seconds: list[float] = field(default_factory=list)
    score_seconds: list[float] = field(default_factory=list)
    update_seconds: list[float] = field(default_factory=list)
    generated_tokens: list[int] = field(default_factory=list)
    gen_flops_per_token: float = 0.0  # 2 N of the policy
    probe_flops: float = 0.0  # the host's matmul rate around this run (`host_probe`, before and after)
    profile: dict[str, float] = field(default_factory=dict)  # with a profiled worker: op_profile.split

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class StepClock:
    """Timestamps of step ends; `seconds(warmup)` gives the durations of the steps after `warmup`."""

    def __init__(self) -> None:
        self.ends = [time.perf_counter()]  # ends[0]: the start of step 1

    def tick(self) -> None:
        sync()
        self.ends.append(time.perf_counter())

    def seconds(self, warmup: int) -> list[float]:
        return [b - a for a, b in zip(self.ends[warmup:], self.ends[warmup + 1:])]


def bench_device() -> str:
    """The device this worker's two sides run on: "cuda" or "cpu" (the worker sets the project's
    RLHF_DEVICE from its spec, and the TRL side reads the same)."""
    from rlhf.train.runtime import DEVICE_ENV

    return os.environ.get(DEVICE_ENV, "cpu")


def sync() -> None:
    """Wait for the queued GPU work, if any."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_gpu_mib() -> float:
    return torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else 0.0


def peak_rss_mib() -> float:
    """Peak resident set of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flop_params(model: torch.nn.Module, lm_head: bool) -> int:
    """N of the module docstring: every distinct parameter but the embedding tables (wte, wpe),
    plus the output projection when `lm_head` and it is tied to wte (GPT-2's is), since that
    matmul runs on every position. A reward model's scalar head is counted with the body."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    params = {id(p): p for p in model.parameters()}  # a tied weight once
    body = sum(p.numel() for key, p in params.items() if key not in tables)
    if lm_head:
        out = model.get_output_embeddings().weight
        body += out.numel() if id(out) in tables else 0  # untied: already in the body
    return body


def head_params(model: torch.nn.Module) -> int:
    """d x V of a language model's output projection: the matmul a position pays only when its
    logits are computed."""
    return model.get_output_embeddings().weight.numel()


def peak_matmul_flops(n: int | None = None, repeats: int = 10, dtype: torch.dtype = torch.float32,
                      device: str = "cpu") -> float:
    """Best FLOP/s of `torch.matmul` on two n x n `dtype` matrices (2 n^3 FLOPs) over `repeats` runs
    on `device` (n: 2048 on the CPU, 8192 on a GPU, which 2048 leaves partly idle)."""
    n = n or (8192 if device == "cuda" else 2048)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    torch.matmul(a, b)  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def matmul_dtype(precision: str) -> torch.dtype:
    """The dtype a run's matmuls take: bf16 under `--precision bf16` (autocast), else fp32."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def host_probe(dtype: torch.dtype = torch.float32, device: str = "cpu") -> float:
    """The host's matmul rate now: `peak_matmul_flops` of 1024 x 1024 matrices (2048 on a GPU),
    best of 9, in about 0.1 s on 2 cores."""
    return peak_matmul_flops(n=2048 if device == "cuda" else 1024, repeats=9, dtype=dtype, device=device)
