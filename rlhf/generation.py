"""Batched sampling from a causal LM in the one chat format (used by SFT evaluation and PPO rollouts).

Prompts are encoded with `rlhf.chat.encode_prompt` (BOS + "\n\nHuman: ...\n\nAssistant:") and
left-padded, so every row's next token is its first response token; `model.generate` samples with
the KV cache. Everything after a row's first EOS is cut: the response mask is 1 up to and including
that EOS (emitting EOS is one of the policy's actions, so its log-probability counts) and 0
after it.

Sampling is pure temperature sampling unless asked otherwise: `top_k` is disabled explicitly (the
transformers default of 50 would make PPO's log-probabilities disagree with the sampling
distribution), `top_p=1.0` keeps the full distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.chat import encode_prompt
from rlhf.train.batching import pad


@dataclass
class Samples:
    """B sampled responses. R is the longest response (EOS included) in the batch."""

    prompts: list[str]
    texts: list[str]  # decoded responses, without EOS or padding
    prompt_ids: torch.Tensor  # (B, P) left-padded with pad_token_id
    prompt_mask: torch.Tensor  # (B, P) 1 on prompt tokens
    response_ids: torch.Tensor  # (B, R) right-padded with pad_token_id after the first EOS
    response_mask: torch.Tensor  # (B, R) 1 up to and including the first EOS
    ended: torch.Tensor  # (B,) bool: the response produced EOS within max_new_tokens

    @property
    def sequences(self) -> torch.Tensor:
        """(B, P + R) prompt and response ids."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P + R) 1 on real prompt and response tokens."""
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)


def encode_prompts(tokenizer: Any, prompts: Sequence[str], max_prompt_len: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-format prompts -> left-padded (ids, mask), each (B, P). Prompts longer than
    `max_prompt_len` keep BOS and their last tokens (the part next to the response)."""
    seqs = [encode_prompt(tokenizer, p) for p in prompts]
    if max_prompt_len is not None:
        seqs = [s if len(s) <= max_prompt_len else s[:1] + s[len(s) - max_prompt_len + 1:] for s in seqs]
    return pad(seqs, tokenizer.pad_token_id, "left"), pad([[1] * len(s) for s in seqs], 0, "left")


def truncate_after_eos(response_ids: torch.Tensor, eos_token_id: int, pad_token_id: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, R) raw generated ids -> (ids with pad after the first EOS, mask up to and including the
    first EOS, ended (B,) bool)."""
    is_eos = response_ids == eos_token_id  # (B, R)
    ended = is_eos.any(dim=1)  # (B,)
    # position of the first EOS, or R when there is none
    none = torch.full_like(ended, response_ids.shape[1], dtype=torch.long)
    first = torch.where(ended, is_eos.int().argmax(dim=1), none)  # (B,)
    cols = torch.arange(response_ids.shape[1], device=response_ids.device)  # (R,)
    mask = (cols[None, :] <= first[:, None]).long()  # (B, R)
    ids = torch.where(mask.bool(), response_ids, torch.full_like(response_ids, pad_token_id))
    return ids, mask, ended


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int | None = None,
    max_prompt_len: int | None = None,
) -> Samples:
    """Sample one response per prompt, `batch_size` prompts per `model.generate` call.

    `temperature=0` decodes greedily. `seed` makes the samples reproducible without moving the
    global RNG. `max_prompt_len` defaults to the model's context minus `max_new_tokens`. Pass an
    unwrapped model (`accelerator.unwrap_model`); autocast, if any, is the caller's context.
    """
    from transformers import GenerationConfig

    from rlhf.train.models import max_positions

    assert len(prompts) > 0 and max_new_tokens > 0 and temperature >= 0 and 0 < top_p <= 1
    device = next(model.parameters()).device
    if max_prompt_len is None:
        max_prompt_len = max(1, max_positions(model.config) - max_new_tokens)
    gen_cfg = GenerationConfig(
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=top_p if temperature > 0 else None,
        top_k=0 if temperature > 0 else None,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        use_cache=True,
    )
    devices = [device.index or 0] if device.type == "cuda" else []
    chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            ids, mask = encode_prompts(tokenizer, prompts[start: start + batch_size], max_prompt_len)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg)
            chunks.append((ids, mask, out[:, ids.shape[1]:].cpu()))  # (b, P_i), (b, P_i), (b, R_i)
    # join the chunks: prompts re-padded on the left, responses on the right
    prompt_rows = [row[m.bool()].tolist() for ids, mask, _ in chunks for row, m in zip(ids, mask)]
    response_rows = [row.tolist() for *_, resp in chunks for row in resp]
    resp = pad(response_rows, tokenizer.pad_token_id, "right")  # (B, R)
    resp, resp_mask, ended = truncate_after_eos(resp, tokenizer.eos_token_id, tokenizer.pad_token_id)
    texts = [
        tokenizer.decode(r[: int(m.sum()) - int(e)].tolist(), skip_special_tokens=False).strip()
        for r, m, e in zip(resp, resp_mask, ended)
    ]
    return Samples(
        prompts=list(prompts),
        texts=texts,
        prompt_ids=pad(prompt_rows, tokenizer.pad_token_id, "left"),
        prompt_mask=pad([[1] * len(r) for r in prompt_rows], 0, "left"),
        response_ids=resp,
        response_mask=resp_mask,
        ended=ended,
    )
