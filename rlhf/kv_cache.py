"""A KV cache that is allocated once per sampling call (used by `rlhf.generation.decode`).

transformers' `DynamicLayer` grows its keys and values with `torch.cat` at every decode step, so
step t copies all t cached positions again: O(T^2) copying and a fresh allocation per layer and
step. `PreallocatedLayer` writes each step into a buffer sized for prompt + new tokens and hands
attention a view of the filled part, so attention still sees exactly the positions it would see
with `DynamicLayer` (the same values, the same mask sizes). Sliding-window and other layer kinds
are left as transformers builds them.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A full-attention cache layer of at most `capacity` positions, filled in place."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.filled = capacity, 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append (b, h, t, d) keys and values; return the (b, h, filled, d) views attention reads."""
        if not self.is_initialized:
            b, h, _, d = key_states.shape
            self.device = key_states.device
            self.key_buffer = key_states.new_empty(b, h, self.capacity, d)
            self.value_buffer = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
            self.is_initialized = True
        end = self.filled + key_states.shape[-2]
        assert end <= self.capacity, f"the cache holds {self.capacity} positions, {end} were written"
        self.key_buffer[:, :, self.filled:end] = key_states
        self.value_buffer[:, :, self.filled:end] = value_states
        self.filled = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values


def preallocated_cache(config: Any, capacity: int) -> DynamicCache:
    """transformers' cache for `config`, its full-attention layers preallocated to `capacity`."""
    cache = DynamicCache(config=config)
    cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
