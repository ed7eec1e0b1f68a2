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


def collate_preference_batch(
    chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]], pad_id: int, share: bool
) -> dict[str, torch.Tensor]:
    """`collate_shared_pairs` when `share` and it saves at least a tenth of the padded tokens of
    `collate_pairs` (it does whenever pairs share a prompt), else `collate_pairs`. A consumer tells
    the two apart by `score_index`."""
    if share:
        shared = collate_shared_pairs(chosen, rejected, pad_id)
        plain_width = max(len(s) for s in (*chosen, *rejected))
        if shared["input_ids"].shape[1] <= 0.9 * 2 * plain_width:
            return shared
    return collate_pairs(chosen, rejected, pad_id)


def pairs_in(batch: dict[str, torch.Tensor]) -> int:
    """Preference pairs in a batch of either layout."""
    return len(batch["score_index"]) if "score_index" in batch else batch["input_ids"].shape[0] // 2


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Tokens at the start of `a` and `b` that are equal, leaving each at least its last token."""
    n = 0
    for x, y in zip(a[:-1], b[:-1]):
        if x != y:
            break
        n += 1
    return n


def shared_columns(c: Sequence[int], r: Sequence[int]) -> tuple[int, list[int], list[int]]:
    """The common prefix length n of a pair and the row column of each token of `c` and of `r` in
    the shared layout `c + r[n:]` (r's first n tokens are c's)."""
    n = common_prefix(c, r)
    return n, list(range(len(c))), [*range(n), *range(len(c), len(c) + len(r) - n)]


def collate_shared_pairs(
    chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """B pairs -> B rows `common prefix + chosen tail + rejected tail`, the prefix (the prompt, at
    least) held once: 2L fewer tokens per pair of a prompt of L tokens than `collate_pairs`.

    The rejected tail sees the prefix and itself, never the chosen tail, and its positions continue
    from the prefix, so each sequence gets the hidden states it would get alone (causal decoders).
    Returns input_ids and position_ids (B, T), a boolean (B, 1, T, T) `attention_mask` (give the
    model `model_attention_mask` of it), and `score_index` (B, 2): the column of each sequence's
    last token that is not `pad_id` ([chosen, rejected]; where a decoder's reward head reads it).
    """
    assert len(chosen) == len(rejected) > 0, "need as many chosen as rejected sequences"
    ids, pos, seg, index = [], [], [], []
    for c, r in zip(chosen, rejected):
        n, c_cols, r_cols = shared_columns(c, r)
        ids.append([*c, *r[n:]])
        pos.append([*range(len(c)), *range(n, len(r))])
        seg.append([0] * n + [1] * (len(c) - n) + [2] * (len(r) - n))  # prefix, chosen tail, rejected tail
        index.append([c_cols[last_real(c, pad_id)], r_cols[last_real(r, pad_id)]])
    seg_t = pad(seg, -1)  # (B, T), -1 on padding
    T = seg_t.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
    same = seg_t[:, :, None] == seg_t[:, None, :]  # (B, T, T)
    sees_prefix = (seg_t[:, None, :] == 0) & (seg_t[:, :, None] >= 0)  # a real token sees the prefix
    return {
        "input_ids": pad(ids, pad_id),  # (B, T)
        "position_ids": pad(pos, 0),  # (B, T)
        "attention_mask": ((same | sees_prefix) & causal)[:, None],  # (B, 1, T, T)
        "score_index": torch.tensor(index),  # (B, 2)
    }


def shared_pair_targets(chosen: Sequence[dict[str, list[int]]],
                        rejected: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """What a sequence log-probability needs of shared-prefix rows (`collate_shared_pairs` of the
    examples' `input_ids`): for token k >= 1 of each sequence, the column whose logits predict it
    (that of token k-1 of the same sequence), its id, and its `loss_mask` weight. Shapes (B, 2, R),
    [chosen, rejected] on axis 1, R = the longest sequence - 1; `lengths` (2B,) [chosen; rejected]."""
    R = max(len(e["input_ids"]) for e in (*chosen, *rejected)) - 1
    frm, ids, weights = (torch.zeros(len(chosen), 2, R, dtype=torch.long) for _ in range(3))
    for b, (c, r) in enumerate(zip(chosen, rejected)):
        _, c_cols, r_cols = shared_columns(c["input_ids"], r["input_ids"])
        for j, (ex, cols) in enumerate(((c, c_cols), (r, r_cols))):
            k = len(ex["input_ids"]) - 1  # targets: tokens 1..k
            frm[b, j, :k] = torch.tensor(cols[:-1])
            ids[b, j, :k] = torch.tensor(ex["input_ids"][1:])
            weights[b, j, :k] = torch.tensor(ex["loss_mask"][1:])
    lengths = torch.tensor([sum(e["loss_mask"]) for e in (*chosen, *rejected)], dtype=torch.float)
    return {"target_from": frm, "targets": ids, "target_mask": weights, "lengths": lengths}


def last_real(seq: Sequence[int], pad_id: int) -> int:
    """Index of the last token of `seq` that is not `pad_id` (0 if there is none), as a decoder's
    sequence classifier picks it."""
    return max((i for i, t in enumerate(seq) if t != pad_id), default=0)


def model_attention_mask(model: Any, mask: torch.Tensor) -> torch.Tensor:
    """The `attention_mask` to give `model`: a (b, T) padding mask as it is; a (b, 1, T, T) boolean
    mask (packed SFT rows, shared-prefix pairs) as additive offsets in the dtype the attention
    scores are computed in (the autocast dtype inside autocast, else the weights').

    Hugging Face hands a 4-D mask to the attention function untouched; eager attention adds it to
    the scores, so a boolean one would let every token see the whole row (the future and the other
    examples). The additive form is read the same way by eager and SDPA attention (tested on GPT-2
    and Llama); other implementations (flash attention, ...) are refused rather than trusted with it.
    """
    if mask.dim() != 4:
        return mask
    impl = attention_implementation(model)
    assert impl in BLOCK_MASK_ATTENTION, (
        f"a block-diagonal attention mask needs eager or sdpa attention, not {impl!r} "
        "(or set sft.packing / reward.share_prompt to false)")
    device = mask.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else next(model.parameters()).dtype
    return additive_mask(mask, dtype)  # (b, 1, T, T)


BLOCK_MASK_ATTENTION = ("eager", "sdpa")  # attention implementations that read an additive 4-D mask


def shares_prefixes(model: Any, max_len: int | None = None) -> bool:
    """Whether a causal LM reads shared-prefix rows (`collate_shared_pairs`) as separate sequences:
    its attention implementation takes an additive 4-D mask, and no sequence (at most `max_len`
    tokens; None: unknown) is longer than its sliding window, if it has one: the 4-D mask takes the
    window's place, so a longer sequence would see keys that the model never sees."""
    if attention_implementation(model) not in BLOCK_MASK_ATTENTION:
        return False
    window = sliding_window(model)
    return window is None or (max_len is not None and max_len <= window)


def sliding_window(model: Any) -> int | None:
    """W when attention layers of a (possibly wrapped) Hugging Face model see only the last W tokens
    (Mistral; Qwen2 with `use_sliding_window`; the sliding layers of Gemma 2 and 3), else None."""
    config = getattr(model, "module", model).config
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and not any("sliding" in str(t) for t in layer_types):
        return None
    return int(window)


def attention_implementation(model: Any) -> str | None:
    """The `_attn_implementation` of a (possibly wrapped) Hugging Face model."""
    return getattr(getattr(model, "module", model).config, "_attn_implementation", None)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counted over real tokens only, so a left-padded row gets the same
    positions as the unpadded sequence (padding slots get 0; they are masked anyway)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


GROUP_BATCHES = 50  # batches per length group of `BatchOrder(lengths=...)`: items meet within a group


class BatchOrder:
    """Which items each optimizer step uses: a pure function of (seed, step).

    Epoch `e` visits the `n` items in a permutation drawn from `seed + e`; epochs are laid end to
    end and step `s` takes items `[s*B, (s+1)*B)` of that stream. Resuming at step `s` therefore
    needs only `s`, and a resumed run sees exactly the batches of an uninterrupted one.

    With `lengths` (the padded width each item brings, `group_by_length`), each epoch's permutation
    is cut into groups of `GROUP_BATCHES * B` items, a group is sorted by length and its batches are
    put in a random order (`by_length`): a batch then holds items of about one length, so little of
    it is padding, while which items share a group stays random.
    """

    def __init__(self, n: int, batch_size: int, seed: int, lengths: Sequence[int] | None = None):
        assert n > 0 and batch_size > 0, (n, batch_size)
        assert lengths is None or len(lengths) == n, "one length per item"
        self.n, self.batch_size, self.seed, self.lengths = n, batch_size, seed, lengths
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            if self.lengths is not None:
                perm = by_length(perm, self.lengths, self.batch_size, g)
            self._perms = {epoch: perm}  # keep one epoch
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        start = step * self.batch_size
        return [self._perm(i // self.n)[i % self.n] for i in range(start, start + self.batch_size)]

    def epoch(self, step: int) -> float:
        """Epochs completed after `step` optimizer steps."""
        return step * self.batch_size / self.n


def by_length(order: Sequence[int], lengths: Sequence[int], batch_size: int, g: torch.Generator) -> list[int]:
    """`order` cut into groups of `GROUP_BATCHES * batch_size` items, each sorted by length (longest
    first, ties in `order`'s order) and its whole batches shuffled with `g`; a group's last, partial
    batch (only the last group has one) stays last."""
    out: list[int] = []
    group = GROUP_BATCHES * batch_size
    for start in range(0, len(order), group):
        items = sorted(order[start: start + group], key=lambda i: -lengths[i])
        whole = len(items) // batch_size
        for b in torch.randperm(whole, generator=g).tolist():
            out.extend(items[b * batch_size: (b + 1) * batch_size])
        out.extend(items[whole * batch_size:])
    return out


def pair_width(chosen: Sequence[int], rejected: Sequence[int], share: bool) -> int:
    """Columns a pair needs in a preference batch: `collate_shared_pairs`' one row (the common
    prefix once) with `share`, else the longer of `collate_pairs`' two rows."""
    return len(chosen) + len(rejected) - common_prefix(chosen, rejected) if share else max(len(chosen), len(rejected))


def require_split(stage: str, batch_size: int, micro_batch_size: int, num_processes: int) -> None:
    """Refuse, before training, a global batch that `num_processes` processes cannot share in whole
    micro-batches (`shard_and_split`), naming the param keys and what would work."""
    from rlhf.errors import UserError

    if batch_size % (micro_batch_size * num_processes):
        fits = batch_size // num_processes if batch_size % num_processes == 0 else None
        hint = (f"set {stage}.micro_batch_size to a divisor of {fits}" if fits
                else f"set {stage}.batch_size to a multiple of {micro_batch_size * num_processes}")
        raise UserError(f"{stage}.batch_size={batch_size} cannot be shared by {num_processes} processes in "
                        f"micro-batches of {stage}.micro_batch_size={micro_batch_size} (each process takes "
                        f"{batch_size / num_processes:g} rows): {hint}")


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
