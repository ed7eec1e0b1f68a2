"""Fully sharded data parallelism (FSDP) with torch's own `fully_shard` (FSDP2), for models whose
weights, gradients and AdamW moments do not fit one device next to each other.

With `fsdp: true` in a training stage's params and N processes (`RLHF_NUM_PROCESSES=N`), each
process holds 1/N of every parameter, its gradient and both AdamW moments. Each repeated block of
the model (a transformer layer, the names its `_no_split_modules` lists) and then the whole model
become one FSDP unit: a unit's full weights are all-gathered just before its forward and its
backward and freed right after, and its gradients are reduce-scattered, averaged over the
processes as DDP averages them. So a run equals the DDP run and the one-process run within float
tolerance (`tests/smoke/test_fsdp.py`), while a process holds about 1/N of the training state plus
one block's full weights.

Gradients are reduce-scattered after every micro-batch (no `no_sync`): accumulating them unsharded
would hold a full gradient per process, the memory FSDP is there to save; the sum of the averaged
shares is the same gradient.

What leaves a run is always whole: a saved model or a checkpoint holds the full tensors, gathered
from every process (`full_weights`, `full_optimizer_state`), in the files and the layout a
one-process run writes. A checkpoint therefore resumes with any number of processes, sharded or not
(`sharded_optimizer_state` cuts each AdamW moment back to this process's shard).

Every forward of a sharded model is a collective: all processes must run the same number of them.
The trainers' steps do (`shard_and_split` gives every process the same micro-batches); held-out
passes use `lockstep` batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def _dtensor() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch built without distributed
        return None
    return DTensor


def is_sharded(model: Any) -> bool:
    """Whether `model` is an FSDP unit (`fully_shard` was applied to it)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, FSDPModule)


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of `model` that become FSDP units: modules whose class is named in the
    `_no_split_modules` of any transformers model inside it (GPT2Block, LlamaDecoderLayer, BertLayer...).
    A model that names none is refused: sharding only at the root would gather it whole."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    found = [m for m in model.modules() if type(m).__name__ in names]
    if not found:
        raise ValueError(f"{type(model).__name__}: no repeated blocks to shard (no transformers model inside "
                         "names its `_no_split_modules`); train it without fsdp")
    return found


def shard(model: torch.nn.Module, accelerator: Any, fsdp: bool) -> torch.nn.Module:
    """`model` sharded over the processes when `fsdp` and there are several (each block, then the
    root: `fully_shard`); otherwise moved whole to this process's device (a trained model gets DDP
    later, from `prepare`). Call it before building the optimizer: AdamW must see the sharded
    parameters. Give it the model where it was loaded (the CPU): `fully_shard` moves each block to
    this process's device as it shards it, so the device never holds more than one block in full."""
    if not fsdp or accelerator.num_processes == 1:
        return model.to(accelerator.device)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    for block in blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def prepare(accelerator: Any, model: Any, optimizer: Any) -> tuple[Any, Any]:
    """`accelerator.prepare(model, optimizer)` (device placement, DDP over the processes), except
    for a sharded model, which FSDP already spreads over them (DDP around it would all-reduce what
    FSDP has reduce-scattered)."""
    if is_sharded(model):
        return model, optimizer
    return accelerator.prepare(model, optimizer)


def gathered(value: Any) -> Any:
    """A sharded tensor (DTensor) as the full tensor on the CPU (a collective); anything else as it is."""
    dtensor = _dtensor()
    if dtensor is not None and isinstance(value, dtensor):
        return value.full_tensor().cpu()
    return value


def full_weights(model: Any) -> dict[str, torch.Tensor] | None:
    """The full state dict of a sharded model, on the CPU of every process (a collective: every
    process calls it, in the same order); None for a model that is not sharded (it saves itself).
    A tied tensor (GPT-2's LM head is its embedding) is kept once, under its first name, as
    `save_pretrained` keeps it."""
    if not is_sharded(model):
        return None
    seen: dict[int, str] = {}
    tied = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied.add(name)
        seen.setdefault(id(param), name)
    return {name: gathered(value) for name, value in model.state_dict().items() if name not in tied}


def full_optimizer_state(optimizer: Any) -> dict[str, Any]:
    """`optimizer.state_dict()` with every sharded moment gathered whole (a collective): the state
    dict a one-process run saves, whatever the number of processes."""
    state = optimizer.state_dict()
    return {**state, "state": {index: {k: gathered(v) for k, v in entry.items()}
                               for index, entry in state["state"].items()}}


def sharded_optimizer_state(optimizer: Any, state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `full_optimizer_state` for this process: every full moment of a sharded
    parameter cut to this process's shard, ready for `optimizer.load_state_dict`."""
    dtensor = _dtensor()
    params = [p for group in optimizer.param_groups for p in group["params"]]  # state-dict index order
    if dtensor is None or not any(isinstance(p, dtensor) for p in params):
        return state
    from torch.distributed.tensor import distribute_tensor

    def cut(param: Any, value: Any) -> Any:
        if isinstance(param, dtensor) and torch.is_tensor(value) and value.shape == param.shape:
            return distribute_tensor(value.to(param.device_mesh.device_type), param.device_mesh, param.placements)
        return value  # the step count, or a parameter that is not sharded

    return {**state, "state": {index: {k: cut(params[int(index)], v) for k, v in entry.items()}
                               for index, entry in state["state"].items()}}


def lockstep(items: Sequence[T], batch_size: int, process_index: int, num_processes: int) -> Iterator[list[T]]:
    """This process's share (`items[process_index::num_processes]`) in batches of `batch_size`, as
    many batches on every process: a sharded model's forward is a collective. A process whose share
    ran out gets empty batches (the caller runs the model on a stand-in row and ignores the result)."""
    mine = list(items[process_index::num_processes])
    rounds = math.ceil(math.ceil(len(items) / num_processes) / batch_size)
    for i in range(rounds):
        yield mine[i * batch_size: (i + 1) * batch_size]
