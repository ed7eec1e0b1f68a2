"""Batched sampling from a causal LM in the one chat format (used by SFT evaluation and PPO rollouts).

Prompts are encoded with `rlhf.chat.encode_prompt` (BOS + "\n\nHuman: ...\n\nAssistant:") and
left-padded, so every row's next token is its first response token; `decode` samples with a KV
cache allocated once per call (`rlhf.kv_cache`). Everything after a row's first EOS is cut: the
response mask is 1 up to and including that EOS (emitting EOS is one of the policy's actions, so
its log-probability counts) and 0 after it.

Sampling draws from exactly softmax(logits / T) (times the top-p truncation when `top_p < 1`,
which PPO refuses). With `row_seeds`, each prompt draws its tokens from its own random stream
(Gumbel-max: argmax(logits / T + g), g_v = -log(-log u_v), u from the row's generator), so a
prompt's sample does not depend on which prompts share its batch: PPO's rollouts are then the same
whether one process samples the whole batch or N processes sample a shard each.

`decode` is transformers' sampling loop reduced to the operations used here: for the same seed it
draws the same tokens as `model.generate` with `sampling_config` (tested), without the per-token
bookkeeping that costs as much as a small model's forward. It reads nothing from the checkpoint's
`generation_config.json`: real checkpoints ship `repetition_penalty`, `no_repeat_ngram_size`,
`top_k`, `min_p`, `min_new_tokens`, `suppress_tokens`..., and any of them would make the samples
disagree with the teacher-forced log-probs that PPO's ratio, the KL penalty and evaluation's KL all
use. `sampling_config` and `checkpoint_generation_config_hidden` serve `rlhf chat`, which streams its
replies through `model.generate` with every sampling field set the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.chat import Prompt, encode_prompt
from rlhf.train.batching import length_order, pad


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

    def rows(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Rows `idx` without the padding they all share: (sequences (b, p + r), attention mask
        (b, p + r), response mask (b, r), p), p <= P the longest of their prompts, r <= R the
        longest of their responses. Nothing real is cut, so teacher-forced passes over them give
        the same log-probs as over the full-width rows, at a fraction of the cost."""
        index = torch.as_tensor(list(idx), dtype=torch.long)
        prompt_mask, response_mask = self.prompt_mask[index], self.response_mask[index]  # (b, P), (b, R)
        p = int(prompt_mask.sum(dim=1).max())
        r = max(int(response_mask.sum(dim=1).max()), 1)
        P = prompt_mask.shape[1]
        seqs = torch.cat([self.prompt_ids[index, P - p:], self.response_ids[index, :r]], dim=1)
        attn = torch.cat([prompt_mask[:, P - p:], response_mask[:, :r]], dim=1)
        return seqs, attn, response_mask[:, :r], p


def keep_prompt_tail(seq: list[int], max_prompt_len: int) -> list[int]:
    """A prompt longer than `max_prompt_len` keeps BOS and its last tokens (the part next to the
    response)."""
    return seq if len(seq) <= max_prompt_len else seq[:1] + seq[len(seq) - max_prompt_len + 1:]


def left_pad(seqs: Sequence[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> left-padded (ids, mask), each (B, P), so every row ends at its last token."""
    return pad(seqs, pad_token_id, "left"), pad([[1] * len(s) for s in seqs], 0, "left")


def encode_prompts(tokenizer: Any, prompts: Sequence[Prompt], max_prompt_len: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-format prompts -> left-padded (ids, mask), each (B, P); see `keep_prompt_tail`."""
    seqs = [encode_prompt(tokenizer, p) for p in prompts]
    if max_prompt_len is not None:
        seqs = [keep_prompt_tail(s, max_prompt_len) for s in seqs]
    return left_pad(seqs, tokenizer.pad_token_id)


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


def sampling_config(tokenizer: Any, max_new_tokens: int, temperature: float, top_p: float):
    """The full `GenerationConfig` of one call: plain tempered sampling (greedy at T = 0), with every
    logits processor that transformers could otherwise switch on set to its no-op value."""
    from transformers import GenerationConfig

    sample = temperature > 0
    return GenerationConfig(
        do_sample=sample,
        temperature=temperature if sample else 1.0,
        top_p=top_p if sample else 1.0,
        top_k=0 if sample else None,  # the transformers default of 50 truncates the distribution
        min_p=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
        repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0, length_penalty=1.0, bad_words_ids=None, suppress_tokens=None,
        begin_suppress_tokens=None, sequence_bias=None, forced_bos_token_id=None, forced_eos_token_id=None,
        min_length=0, min_new_tokens=None, exponential_decay_length_penalty=None, renormalize_logits=False,
        num_beams=1, num_return_sequences=1, guidance_scale=None, watermarking_config=None,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        use_cache=True,
    )


class RowSeededSampler:
    """A logits processor that turns greedy decoding into sampling from softmax(logits / T) with one
    random stream per row (Gumbel-max trick: for g_v i.i.d. Gumbel(0, 1), argmax_v(z_v + g_v) is
    distributed as softmax(z)). Row i's t-th token uses the t-th draw of generator `seeds[i]`,
    whatever the other rows are. Top-p (`top_p < 1`) truncates z first. Shapes: (b, t), (b, V) ->
    (b, V)."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device) -> None:
        assert temperature > 0, "row-seeded sampling needs a positive temperature"
        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        z = scores.float() / self.temperature  # (b, V)
        if self.top_p < 1.0:
            from transformers import TopPLogitsWarper

            z = TopPLogitsWarper(self.top_p)(input_ids, z)
        u = torch.stack([torch.rand(z.shape[1], generator=g, device=z.device) for g in self.generators])  # (b, V)
        tiny = torch.finfo(u.dtype).tiny
        return z - torch.log(-torch.log(u.clamp(tiny, 1.0 - 1e-7)))  # z + Gumbel noise


def row_seed(seed: int, row: int) -> int:
    """The random stream of prompt `row` of a batch sampled with `seed` (a 63-bit mix of both)."""
    return (seed * 6_364_136_223_846_793_005 + (row + 1) * 1_442_695_040_888_963_407) % (2 ** 63)


@contextmanager
def checkpoint_generation_config_hidden(model: Any) -> Iterator[None]:
    """Replace `model.generation_config` by an empty one for the duration of a `generate` call, so
    that nothing the checkpoint carries fills the fields of the call's own config."""
    from transformers import GenerationConfig

    saved = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def check_prompt_budget(prompt_lengths: Sequence[int], max_new_tokens: int, context: int, key: str) -> None:
    """Refuse sampling settings that would silently cut prompts: every prompt plus `max_new_tokens`
    must fit the model's context. `key` names the param in the message."""
    budget = context - max_new_tokens
    if budget < 1:
        raise ValueError(f"{key}={max_new_tokens} leaves no room for a prompt in the model's "
                         f"{context}-token context; lower it below {context}")
    cut = [n for n in prompt_lengths if n > budget]
    if cut:
        raise ValueError(
            f"{key}={max_new_tokens} leaves {budget} of the model's {context} context tokens for the prompt, "
            f"but {len(cut)} of {len(prompt_lengths)} prompts are longer (longest {max(cut)} tokens); "
            f"lower {key} to at most {context - max(cut)} or shorten the prompts"
        )


def token_rule(temperature: float, top_p: float, processor: Any = None
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """How the next token is picked from a step's float32 logits (b, V), given the ids so far (b, t):
    `processor` (if any) first, then argmax at T = 0, else a draw from softmax(logits / T) (top-p
    truncated when `top_p < 1`) with the global random stream. These are the operations, in the same
    order, of transformers' sampling loop with the `sampling_config` of the same settings, so a
    seed gives the same samples as `model.generate` would (tests/unit/test_generation.py)."""
    from transformers import TopPLogitsWarper

    top = TopPLogitsWarper(top_p) if temperature > 0 and top_p < 1.0 else None

    def pick(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if processor is not None:
            scores = processor(ids, scores)
        if temperature == 0:
            return scores.argmax(dim=-1)
        if temperature != 1.0:
            scores = scores / temperature
        if top is not None:
            scores = top(ids, scores)
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)

    return pick


def cache_keyword(model: Any) -> str:
    """The keyword a model's forward takes its KV cache by: `cache` in recent transformers,
    `past_key_values` in earlier 5.x releases (a PEFT wrapper passes it on to its base model)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def all_finished(unfinished: torch.Tensor, synced: bool) -> bool:
    """True when no row is still sampling: on this process, or on every process when `synced`."""
    done = torch.tensor(0.0 if bool(unfinished.any()) else 1.0, device=unfinished.device)
    if synced:
        torch.distributed.all_reduce(done, op=torch.distributed.ReduceOp.MIN)
    return bool(done)


@torch.no_grad()
def decode(model: Any, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
           pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], eos_token_id: int, pad_token_id: int,
           synced: bool = False) -> torch.Tensor:
    """Sample up to `max_new_tokens` tokens after left-padded prompts with the KV cache. Shapes:
    (b, P), (b, P) -> (b, R), R <= max_new_tokens the steps until every row has emitted EOS; a row
    gets `pad_token_id` after its EOS. Positions are counted over the mask, as in the teacher-forced
    passes (`rlhf.train.batching.position_ids`), and only the last position's logits are computed.
    With `synced` (a sharded model, whose forward is a collective), every process runs as many
    forwards as the slowest one needs; the rows of a process that has finished no longer grow.

    The loop is transformers' own sampling loop stripped to what is used here: at the sizes this
    pipeline trains, the per-token bookkeeping of `model.generate` costs about as much as the
    model's forward itself (benchmarks/generation.py)."""
    from rlhf.kv_cache import preallocated_cache
    from rlhf.train.batching import position_ids

    cache, keyword = preallocated_cache(model.config, ids.shape[1] + max_new_tokens), cache_keyword(model)
    positions, step_ids, seq = position_ids(mask), ids, ids
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)  # (b,)
    new: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1, **{keyword: cache})
        token = torch.full_like(unfinished, pad_token_id, dtype=torch.long)  # (b,)
        if bool(unfinished.any()):
            token = pick(seq, out.logits[:, -1].to(copy=True, dtype=torch.float32))
            token = torch.where(unfinished, token, pad_token_id)
            seq = torch.cat([seq, token[:, None]], dim=1)
            new.append(token)
            unfinished &= token != eos_token_id
        if all_finished(unfinished, synced):
            break
        step_ids, positions = token[:, None], positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return torch.stack(new, dim=1) if new else ids.new_zeros(ids.shape[0], 0)


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int | None = None,
    max_prompt_len: int | None = None,
    budget_key: str = "max_new_tokens",
    row_seeds: Sequence[int] | None = None,
) -> Samples:
    """Sample one response per prompt, `batch_size` prompts per `model.generate` call, batched in
    order of prompt length (so a long prompt pads only its neighbours); the samples come back in
    the prompts' own order.

    `temperature=0` decodes greedily. `seed` makes the samples reproducible without moving the
    global RNG. Longer prompts than `max_prompt_len` (if set) keep BOS and their last tokens; every
    prompt must then fit the model's context together with `max_new_tokens` (a ValueError naming
    `budget_key` otherwise). `row_seeds` (one per prompt, `row_seed`) gives each prompt its own
    random stream (`RowSeededSampler`; needs T > 0), so that its sample is the same in any batch;
    `seed` is then unused. Pass an unwrapped model (`accelerator.unwrap_model`); autocast, if
    any, is the caller's context.
    """
    from rlhf.train.models import max_positions
    from rlhf.train.sharding import is_sharded

    assert len(prompts) > 0 and max_new_tokens > 0 and temperature >= 0 and 0 < top_p <= 1
    device = next(model.parameters()).device
    seqs = [encode_prompt(tokenizer, p) for p in prompts]
    if max_prompt_len is not None:
        seqs = [keep_prompt_tail(s, max_prompt_len) for s in seqs]
    check_prompt_budget([len(s) for s in seqs], max_new_tokens, max_positions(model.config), budget_key)
    assert row_seeds is None or (len(row_seeds) == len(prompts) and temperature > 0), "one seed per prompt, T > 0"
    pick = token_rule(temperature, top_p)
    # a sharded model's forward is a collective: every process decodes until all are done
    synced = is_sharded(model) and torch.distributed.get_world_size() > 1
    devices = [device.index or 0] if device.type == "cuda" else []
    responses: list[torch.Tensor] = []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        order = length_order([len(s) for s in seqs])  # batch prompts of similar length: little padding
        for start in range(0, len(prompts), batch_size):
            chunk = order[start: start + batch_size]
            ids, mask = left_pad([seqs[i] for i in chunk], tokenizer.pad_token_id)
            if row_seeds is not None:  # greedy over the sampler's Gumbel-perturbed logits is the sampling
                pick = token_rule(0.0, 1.0, RowSeededSampler([row_seeds[i] for i in chunk], temperature, top_p, device))
            out = decode(model, ids.to(device), mask.to(device), max_new_tokens, pick, tokenizer.eos_token_id,
                         tokenizer.pad_token_id, synced)
            responses.append(out.cpu())  # (b, R_i)
    # join the chunks in the prompts' own order: prompts padded on the left as one batch, responses on the right
    generated = [row.tolist() for chunk in responses for row in chunk]  # in `order`
    response_rows: list[list[int]] = [[] for _ in seqs]
    for i, row in zip(order, generated):
        response_rows[i] = row
    prompt_ids, prompt_mask = left_pad(seqs, tokenizer.pad_token_id)  # (B, P)
    resp = pad(response_rows, tokenizer.pad_token_id, "right")  # (B, R)
    resp, resp_mask, ended = truncate_after_eos(resp, tokenizer.eos_token_id, tokenizer.pad_token_id)
    texts = [
        tokenizer.decode(r[: int(m.sum()) - int(e)].tolist(), skip_special_tokens=False).strip()
        for r, m, e in zip(resp, resp_mask, ended)
    ]
    return Samples(
        prompts=list(prompts),
        texts=texts,
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=resp,
        response_mask=resp_mask,
        ended=ended,
    )
