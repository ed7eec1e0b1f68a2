"""Device, precision, seeding and RNG state for every trainer.

One `Accelerator` per stage run decides the device (CUDA when present, else CPU), the precision
(bf16 autocast on CUDA, and on a CPU with native bf16 matmul when asked for) and data parallelism (`accelerate launch` with N processes needs no code
change: trainers shard each global batch by `process_index`, see `rlhf.train.batching`).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch

MixedPrecision = Literal["auto", "no", "bf16"]


def cpu_has_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX, as oneDNN reports it)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_mixed_precision(mixed_precision: MixedPrecision) -> str:
    """'auto' -> 'bf16' on CUDA, 'no' elsewhere; 'no' passes through; 'bf16' needs CUDA or a CPU
    with native bf16 matmul (there bf16 autocast is an opt-in: about 2x faster matmuls, bf16
    numerics; without native support it is slower than fp32, so it is refused)."""
    if mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    if mixed_precision == "bf16" and not torch.cuda.is_available() and not cpu_has_bf16():
        raise ValueError("mixed_precision='bf16' needs a CUDA device or a CPU with native bf16 matmul "
                         "(AVX512-BF16 or AMX); use 'auto' or 'no' here")
    return mixed_precision


def make_accelerator(mixed_precision: MixedPrecision = "auto"):
    """An `accelerate.Accelerator` for one stage run.

    Gradient accumulation is not delegated to accelerate (its per-micro-batch loss division is the
    normalisation bug of TRL issue 2175); `rlhf.train.optim.optimizer_step` does it.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # accelerate keeps one precision per process; stages run one after another in one process
    # (`rlhf pipeline --no-dvc`, tests) may differ in it, so the previous stage's is dropped
    # (the process group, PartialState, is kept)
    AcceleratorState._reset_state()
    require_device()
    refuse_accelerate_sharding()
    # on the CPU, say so: accelerate then runs the processes of `torchrun` / `accelerate launch` as
    # one data-parallel group over gloo (MULTI_CPU) instead of N independent runs
    cpu = os.environ.get(DEVICE_ENV, "").strip().lower() == "cpu" or not torch.cuda.is_available()
    if cpu and os.environ.get(KEEP_FREED_MEMORY_ENV, "").strip() == "1":
        keep_freed_memory()
    return Accelerator(mixed_precision=resolve_mixed_precision(mixed_precision), cpu=cpu)


KEEP_FREED_MEMORY_ENV = "RLHF_KEEP_FREED_MEMORY"  # "1": a CPU stage calls `keep_freed_memory` (opt-in)


def keep_freed_memory() -> bool:
    """Make the C allocator keep what a step frees for the next step (Linux with glibc: `mallopt`
    M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 2 GiB); returns whether it could. Results do not change:
    only where memory comes from does.

    glibc serves every block over 32 MiB with a fresh `mmap` and unmaps it on free, so on a CPU each
    large tensor (a real model's logits, its embedding gradient, its activations) is page-faulted in
    and zeroed by the kernel again at every step. Where every step has the same shapes that costs as
    much as the matmuls around it: SmolLM2-135M's full-parameter PPO iteration (benchmarks/
    trl_compare.py --model) took 16.3 s with this off and 12.8 s with it on, for 4% more peak RSS.
    Where shapes vary from step to step, freed blocks do not fit the next requests and the heap
    grows instead: the real profile's LoRA SFT stage took 124 s with it on against 119 s off, with
    7.5 GB peak RSS against 5.6 GB. So it is an opt-in, `RLHF_KEEP_FREED_MEMORY=1`."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)  # this process's C library
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: their own allocators
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2 ** 31 - 1))


DEVICE_ENV = "RLHF_DEVICE"  # "cuda": refuse to train without a GPU (a GPU worker); "cpu": never use one


# what `accelerate launch` sets for a config that asks for accelerate's own sharding
_ACCELERATE_SHARDING = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def refuse_accelerate_sharding() -> None:
    """A launch config that asks for accelerate's FSDP or DeepSpeed is refused: the trainers place
    and save their models themselves (a model accelerate sharded behind their back would be saved
    as shards). Sharding is the stage's `fsdp` param (rlhf.train.sharding)."""
    from rlhf.errors import UserError

    for var, name in _ACCELERATE_SHARDING.items():
        if os.environ.get(var, "").strip().lower() in ("1", "true"):
            raise UserError(f"the accelerate config asks for {name} ({var}=true), which the trainers do not take: "
                            "launch with a data-parallel config (configs/accelerate/ddp.yaml) and set `fsdp: true` "
                            "in the stage's params to shard the model")


def require_device() -> None:
    """With RLHF_DEVICE=cuda (set on a GPU worker), a machine without a usable CUDA device stops the
    stage at once with a UserError, instead of training for hours on its CPU."""
    from rlhf.errors import UserError

    want = os.environ.get(DEVICE_ENV, "").strip().lower()
    if want not in ("", "auto", "cuda", "cpu"):
        raise UserError(f"{DEVICE_ENV}={want!r}: expected cuda, cpu or auto")
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{DEVICE_ENV}=cuda asks for a GPU, and this machine has no usable CUDA device "
                        f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): check the "
                        "driver and the torch build, or run the stage on a GPU worker")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). CPU training is then deterministic."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain types (saved with torch.save, loaded weights_only=True)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-file progress bars while saving/loading checkpoints."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def progress_bar(total: int, initial: int, desc: str, accelerator: Any = None):
    """A tqdm bar over optimizer steps (main process only; `TQDM_DISABLE=1` silences it)."""
    from tqdm.auto import tqdm

    main = accelerator is None or accelerator.is_local_main_process
    off = {} if main else {"disable": True}  # an explicit `disable` would override TQDM_DISABLE
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=1.0, **off)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` intra-op threads. Tiny models (tests, toy runs) are fastest on one thread, and
    one thread cannot be slowed down by another process holding the second core."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
