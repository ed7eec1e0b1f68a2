"""From JSON Lines rows to padded tensors, and the deterministic order in which trainers see them.

Token layout (rlhf/chat.py): the prompt's tokens + the response's tokens and EOS (the model's chat
template, or `[bos] prompt_text` + `response_text [eos]`), encoded as two parts and concatenated,
so a training sequence starts with exactly the tokens the sampler conditions on.

Masks are built from lengths, never by comparing ids with `pad_token_id` (a tokenizer whose pad is
its eos would otherwise lose the EOS target).

Preference batches follow docs/architecture.md: `B` pairs are `2B` rows, chosen rows first, in pair
order; pairs `(c0, r0), (c1, r1)` -> rows `[c0, c1, r0, r1]`, split back with `.chunk(2)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlhf.chat import Prompt, encode_prompt, encode_response


def encode_sft_example(tokenizer: Any, prompt: Prompt, response: str, max_len: int) -> dict[str, list[int]]:
    """`input_ids` = bos + prompt + response + eos, and `loss_mask` = 1 on response and EOS tokens.

    Over-long examples keep the response's first tokens (at least half the window) and the prompt's
    last tokens after BOS; what the model learns to continue is then still a real prefix.
    """
    p, r = encode_prompt(tokenizer, prompt), encode_response(tokenizer, prompt, response)
    r_keep = min(len(r), max(max_len - len(p), max_len // 2))
    p_keep = max_len - r_keep
    if p_keep < len(p):
        p = p[:1] + p[len(p) - (p_keep - 1):]  # keep BOS
    r = r[:r_keep]
    return {"input_ids": p + r, "loss_mask": [0] * len(p) + [1] * len(r)}


def encode_dialogue(tokenizer: Any, prompt: Prompt, response: str, max_len: int) -> list[int]:
    """bos + prompt + response + eos for scoring; over-long ones lose prompt tokens after BOS, so
    the last token (the one a reward head reads) is always the real end of the response."""
    ids = encode_prompt(tokenizer, prompt) + encode_response(tokenizer, prompt, response)
    if len(ids) > max_len:
        ids = ids[:1] + ids[len(ids) - (max_len - 1):]
    return ids


def pack_examples(examples: Sequence[dict[str, list[int]]], max_len: int) -> list[dict[str, list[int]]]:
    """Concatenate whole examples, in order, into rows of at most `max_len` tokens.

    Each row carries `segment_ids` (0, 1, 2, ... one per example); `collate_sft` turns them into a
    block-diagonal causal mask and per-example positions, so an example attends only to itself
    and its loss equals the unpacked one (packing without the cross-example attention of plain
    concatenation) once the mask reaches the model as `additive_mask` makes it. On short dialogues
    packing multiplies tokens/s severalfold.
    """
    rows: list[dict[str, list[int]]] = []
    row: dict[str, list[int]] = {"input_ids": [], "loss_mask": [], "segment_ids": []}
    for ex in examples:
        if row["input_ids"] and len(row["input_ids"]) + len(ex["input_ids"]) > max_len:
            rows.append(row)
            row = {"input_ids": [], "loss_mask": [], "segment_ids": []}
        segment = row["segment_ids"][-1] + 1 if row["segment_ids"] else 0
        row["input_ids"] += ex["input_ids"]
        row["loss_mask"] += ex["loss_mask"]
        row["segment_ids"] += [segment] * len(ex["input_ids"])
    if row["input_ids"]:
        rows.append(row)
    return rows


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices sorted by length (stable): consecutive batches of them need the least padding."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


def pad(seqs: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """(B,) lists of ints -> (B, T) LongTensor, T = longest sequence, padded on `side`."""
    assert side in ("left", "right"), side
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            if side == "right":
                out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            else:
                out[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
    return out


def collate_sft(examples: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded SFT micro-batch: input_ids, attention_mask, loss_mask, each (B, T).

    Packed rows (with `segment_ids`) also get `position_ids` (B, T) restarting at every example and
    a block-diagonal causal `attention_mask` of shape (B, 1, T, T) (True = may attend). Give the
    model `additive_mask` of it, not the boolean itself: Hugging Face passes a 4-D mask through
    untouched, and eager attention adds it to the scores (True/False -> +1/+0: no mask at all).
    """
    ids = [e["input_ids"] for e in examples]
    batch = {
        "input_ids": pad(ids, pad_id),  # (B, T)
        "attention_mask": pad([[1] * len(s) for s in ids], 0),  # (B, T)
        "loss_mask": pad([e["loss_mask"] for e in examples], 0),  # (B, T)
    }
    if "segment_ids" in examples[0]:
        seg = pad([e["segment_ids"] for e in examples], -1)  # (B, T), -1 on padding
        T = seg.shape[1]
        cols = torch.arange(T)  # (T,)
        starts = torch.ones_like(seg, dtype=torch.bool)
        starts[:, 1:] = seg[:, 1:] != seg[:, :-1]  # (B, T) first token of each example
        first = torch.where(starts, cols, 0).cummax(dim=1).values  # (B, T) index of the example's start
        batch["position_ids"] = cols - first  # (B, T)
        causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
        batch["attention_mask"] = ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]  # (B, 1, T, T)
    return batch


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, T, T) boolean mask (True = may attend) -> the same mask as attention-score offsets,
    0 where allowed and the most negative `dtype` value elsewhere, in the model's compute dtype.

    Eager attention adds a 4-D mask to the scores and SDPA adds a float one (it also needs it in the
    query's dtype), so this one form means the same under both. Every row keeps its diagonal, so no
    softmax row is all masked (which would give NaN).
    """
    assert allowed.dtype == torch.bool and allowed.dim() == 4, (allowed.dtype, allowed.shape)
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)  # (B, 1, T, T)
    return blocked.masked_fill_(~allowed, torch.finfo(dtype).min)


def collate_pairs(
    chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> dict[str, torch.Tensor]:
    """B chosen and B rejected sequences -> input_ids, attention_mask of shape (2B, T), chosen rows
    first (the preference batch convention above)."""
    assert len(chosen) == len(rejected) > 0, "need as many chosen as rejected sequences"
    seqs = [*chosen, *rejected]
    return {
        "input_ids": pad(seqs, pad_id, side),  # (2B, T)
        "attention_mask": pad([[1] * len(s) for s in seqs], 0, side),  # (2B, T)
    }


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counted over real tokens only, so a left-padded row gets the same
    positions as the unpadded sequence (padding slots get 0; they are masked anyway)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class BatchOrder:
    """Which items each optimizer step uses: a pure function of (seed, step).

    Epoch `e` visits the `n` items in a permutation drawn from `seed + e`; epochs are laid end to
    end and step `s` takes items `[s*B, (s+1)*B)` of that stream. Resuming at step `s` therefore
    needs only `s`, and a resumed run sees exactly the batches of an uninterrupted one.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        assert n > 0 and batch_size > 0, (n, batch_size)
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g).tolist()}  # keep one epoch
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        start = step * self.batch_size
        return [self._perm(i // self.n)[i % self.n] for i in range(start, start + self.batch_size)]

    def epoch(self, step: int) -> float:
        """Epochs completed after `step` optimizer steps."""
        return step * self.batch_size / self.n


def shard_and_split(indices: Sequence[int], micro_batch_size: int, process_index: int = 0,
                    num_processes: int = 1) -> list[list[int]]:
    """This process's share of a global batch, cut into micro-batches.

    (G,) global indices -> G / num_processes indices on this process -> micro-batches of
    `micro_batch_size`. Asserts the division is exact so that every process does the same number
    of backward passes (a mismatch would deadlock data-parallel gradient sync).
    """
    assert len(indices) % (micro_batch_size * num_processes) == 0, (
        f"global batch {len(indices)} must divide by micro_batch_size*num_processes "
        f"= {micro_batch_size}*{num_processes}"
    )
    mine = list(indices[process_index::num_processes])
    return [mine[i: i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]
