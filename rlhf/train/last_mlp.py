"""The last transformer block's MLP at the positions a loss or a head reads, and nowhere else.

Nothing after the last block mixes positions (the final norm, the LM head and a reward model's
scalar head are per position), so the output at a position nobody reads is wasted work. Two
callers read few positions: a reward model pooled at the last token reads one or two per row
(`mlp_at`), and a language model's loss or log-probs read only the response, the last `keep`
positions of the batch, which is also where `logits_to_keep` runs the LM head (`mlp_from`). The
feed-forward part is about two thirds of a block's matmul FLOPs, so with L blocks this saves about
2/(3L) of the body's matmuls on every unread position, in the forward and the backward pass.

The hooks hand the MLP the read rows only and put its output back into a zero tensor of the full
shape: read positions get exactly what the full MLP gives them (the same numbers up to the
matmuls' blocking; tests/unit/test_last_mlp.py checks rewards, logits and gradients against the
plain pass), unread ones a zero update that nothing reads. The attention of the last block still
runs at every position: its keys and values are needed there, and queries at the read positions
only would take per-architecture attention code.

It applies to decoders whose blocks call a dense, position-wise `mlp` module (GPT-2, Llama,
Mistral, Qwen2, SmolLM2, ...). Encoders and mixture-of-experts blocks (whose routing statistics
would change) keep the plain pass. With activation checkpointing the backward pass recomputes the
blocks after the caller's context has ended: `rlhf.train.models.with_activation_checkpointing`
hands `torch.utils.checkpoint` the `recompute_reads` context, which reads the same rows again; a
model checkpointed without it keeps the plain pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

import torch
import torch.nn.functional as F


def _scan(model: torch.nn.Module) -> tuple[torch.nn.Module | None, bool]:
    """In one walk over `model.modules()`: the `mlp` module of its last transformer block (the last
    `ModuleList` with one entry per hidden layer of the outermost transformers config), or None where
    there is no such dense module; and whether some module is checkpointed without `recompute_reads`."""
    n_layers, lists, plain_recompute = None, [], False
    for m in model.modules():
        if n_layers is None:
            n_layers = getattr(getattr(m, "config", None), "num_hidden_layers", None)
        if isinstance(m, torch.nn.ModuleList):
            lists.append(m)
        plain_recompute = plain_recompute or (getattr(m, "gradient_checkpointing", False) is True and not _replays(m))
    blocks = [m for m in lists if n_layers and len(m) == n_layers]
    mlp = getattr(blocks[-1][-1], "mlp", None) if blocks else None
    if not isinstance(mlp, torch.nn.Module) or any(hasattr(mlp, name) for name in ("experts", "router")):
        mlp = None  # no MLP by that name, or tokens routed to experts
    return mlp, plain_recompute


def last_mlp(model: torch.nn.Module) -> torch.nn.Module | None:
    """The `mlp` module of `model`'s last transformer block (the last `ModuleList` with one entry
    per hidden layer, wherever it sits: a causal LM, its base model, a reward model, a peft or DDP
    wrapper), or None where there is no such dense module."""
    return _scan(model)[0]


_ACTIVE: dict[torch.nn.Module, tuple[Callable, Callable]] = {}  # MLP -> (pick, put) of the reads in force


@contextmanager
def _hooked(mlp: torch.nn.Module, pick: Callable[[torch.Tensor], torch.Tensor],
            put: Callable[[torch.Tensor, torch.Size], torch.Tensor]) -> Iterator[None]:
    """Within it, `mlp` runs on `pick(hidden)` and returns `put(out, hidden.shape)`."""
    shapes: list[torch.Size] = []

    def before(_module, args: tuple) -> tuple:
        hidden, *rest = args
        shapes.append(hidden.shape)  # (B, T, H)
        return (pick(hidden), *rest)

    def after(_module, _args, out: torch.Tensor) -> torch.Tensor:
        return put(out, shapes.pop())

    handles = [mlp.register_forward_pre_hook(before), mlp.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _reads(mlp: torch.nn.Module, pick: Callable, put: Callable) -> Iterator[None]:
    """`_hooked`, recorded for the blocks that activation checkpointing recomputes (`recompute_reads`)."""
    _ACTIVE[mlp] = (pick, put)
    try:
        with _hooked(mlp, pick, put):
            yield
    finally:
        del _ACTIVE[mlp]


def recompute_reads() -> tuple[AbstractContextManager[None], AbstractContextManager[None]]:
    """The `context_fn` of `torch.utils.checkpoint` that `rlhf.train.models.with_activation_checkpointing`
    passes: called as a checkpointed block starts its forward pass, it returns the contexts of that pass
    (none) and of its recomputation in the backward pass, which runs the last MLP on the same rows as
    the forward pass did, although the caller's `read_at` / `read_from` has ended by then."""
    active = list(_ACTIVE.items())

    @contextmanager
    def replay() -> Iterator[None]:
        with ExitStack() as stack:
            for mlp, (pick, put) in active:
                stack.enter_context(_hooked(mlp, pick, put))
            yield

    return nullcontext(), replay()


def mlp_at(mlp: torch.nn.Module, index: torch.Tensor) -> AbstractContextManager[None]:
    """`mlp` on the rows `index` (B, K) of its (B, T, H) input only; zeros at the other positions."""
    rows = torch.arange(len(index), device=index.device)[:, None]  # (B, 1)

    def put(out: torch.Tensor, shape: torch.Size) -> torch.Tensor:  # (B, K, H) -> (B, T, H)
        full = out.new_zeros(shape)
        full[rows, index] = out
        return full

    return _reads(mlp, lambda hidden: hidden[rows, index], put)  # (B, K, H)


def mlp_from(mlp: torch.nn.Module, start: int) -> AbstractContextManager[None]:
    """`mlp` on the positions `start`.. of its (B, T, H) input only; zeros before them."""
    pick = lambda hidden: hidden[:, start:].contiguous()  # noqa: E731 (GPT-2's Conv1D views its input)
    return _reads(mlp, pick, lambda out, _shape: F.pad(out, (0, 0, start, 0)))  # (B, T - start, H) -> (B, T, H)


def _replays(module: torch.nn.Module) -> bool:
    """Whether a checkpointed module recomputes with `recompute_reads`."""
    func = getattr(module, "_gradient_checkpointing_func", None)  # transformers' partial of `checkpoint`
    return getattr(func, "keywords", {}).get("context_fn") is recompute_reads


def _guarded(model: torch.nn.Module, hooks: Callable[[torch.nn.Module], AbstractContextManager[None]]):
    if not hasattr(model, "modules"):  # a stand-in without modules: the plain pass
        return nullcontext()
    mlp, plain_recompute = _scan(model)
    return nullcontext() if mlp is None or (plain_recompute and torch.is_grad_enabled()) else hooks(mlp)


def read_at(model: torch.nn.Module, index: torch.Tensor) -> AbstractContextManager[None]:
    """Within it, a forward pass of `model` runs its last MLP at the positions `index` (B, K) only,
    or everywhere where that does not apply (module docstring)."""
    return _guarded(model, lambda mlp: mlp_at(mlp, index))


def read_from(model: torch.nn.Module, start: int) -> AbstractContextManager[None]:
    """Within it, a forward pass of `model` runs its last MLP at the positions `start`.. only, or
    everywhere where that does not apply (module docstring)."""
    return nullcontext() if start <= 0 else _guarded(model, lambda mlp: mlp_from(mlp, start))
