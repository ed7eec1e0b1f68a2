"""Teacher-forced per-token log-probabilities of a causal LM, with temperature scaling.

One forward pass over a batch of token sequences gives, at every position t, the distribution of
token t+1. Sequences may be left-padded (a batch of prompts of different lengths, as the sampler
sees them) and right-padded (responses of different lengths): position ids are counted over the
attention mask, so a left-padded row gets exactly the positions it would get on its own.

Temperature: the sampler draws y_t from softmax(logits / T); the log-probs used by PPO (old, new
and reference alike) must be of that same distribution, otherwise the importance ratio is not 1 on
the first minibatch (Huang et al. 2024, "N+ implementation details"). Top-p truncation is
not applied here: the objective is about the tempered policy, top-p only shapes which samples are
drawn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.train.batching import model_attention_mask, position_ids
from rlhf.train.last_mlp import read_from


def forward_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
    start: int = 0, stop: int | None = None,
) -> torch.Tensor:
    """logits / T of positions [start, stop) (default: every position). Shapes: (B, T), (B, T) ->
    (B, stop - start, V). The LM head and the softmax are the costliest layers of a small model
    with a large vocabulary: a caller that reads only the response asks for those positions only,
    where the last block's MLP runs too (rlhf/train/last_mlp.py). A range that ends before the last
    position (log-probs of a sequence's own tokens never read it) is handed to the model as indices,
    so the logits come back contiguous: cutting them afterwards would cost a copy before the
    log-softmax and a zero-filled gradient of the whole (B, T, V) in the backward pass.

    The logits come back in fp32 whatever the autocast: under bf16 autocast a model prepared by
    accelerate returns fp32 logits and an unprepared one (PPO's reference) bf16 ones, and dividing
    those by T in bf16 would round them again, so that the KL between two equal models is not 0."""
    assert temperature > 0, "temperature must be positive"
    T = input_ids.shape[1]
    stop = T if stop is None else stop
    assert 0 <= start < stop <= T, f"positions [{start}, {stop}) of a {T}-token batch"
    if stop < T:
        kept = {"logits_to_keep": torch.arange(start, stop, device=input_ids.device)}
    else:
        kept = {"logits_to_keep": T - start} if start else {}
    with read_from(model, start):  # the last MLP where logits are kept
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask),
            use_cache=False,
            **kept,
        )
    logits = out.logits.float()  # a no-op in fp32
    return logits if temperature == 1.0 else logits / temperature


def response_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                    temperature: float = 1.0) -> torch.Tensor:
    """logits / T that predict the response tokens input_ids[:, prompt_len:] (left-padded prompts of
    width `prompt_len`, then responses). Shapes: (B, P + R), (B, P + R) -> (B, R, V)."""
    return forward_logits(model, input_ids, attention_mask, temperature, prompt_len - 1, input_ids.shape[1] - 1)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] at every position. Shapes: (B, T, V), (B, T) -> (B, T)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p_v log p_v at every position. Shape (B, T, V) -> (B, T)."""
    return entropy_from_logprobs(F.log_softmax(logits.float(), dim=-1))


def entropy_from_logprobs(logp: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p_v log p_v from log-probabilities. Shape (B, T, V) -> (B, T)."""
    return -(logp.exp() * logp).sum(dim=-1)


def logprobs_and_entropy(logits: torch.Tensor, labels: torch.Tensor, entropy_grad: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """`logprobs_from_logits` and `entropy_from_logits` from one log-softmax. `entropy_grad=False`
    leaves the entropy out of the autograd graph (a loss that weighs it by 0 then pays neither its
    backward nor the memory of its intermediates). Shapes: (B, T, V), (B, T) -> (B, T), (B, T)."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    picked = logp.gather(dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = entropy_from_logprobs(logp)
    return picked, entropy


def token_logprobs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log pi(x_{t+1} | x_<=t) for t = 0..T-2, i.e. of every token but the first.

    Shapes: (B, T), (B, T) -> (B, T-1); column t holds the log-prob of input_ids[:, t+1].
    """
    logits = forward_logits(model, input_ids, attention_mask, temperature, 0, input_ids.shape[1] - 1)  # (B, T-1, V)
    return logprobs_from_logits(logits, input_ids[:, 1:])


def sequence_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log pi(y | x) = SUM over response tokens of log pi(y_t | x, y_<t); prompt tokens excluded.

    `response_mask` (B, T) is 1 on the response tokens (EOS included) of `input_ids`, 0 on prompt
    and padding. Shapes: (B, T) x3 -> (B,).
    """
    T = input_ids.shape[1]
    assert bool((response_mask[:, 1:].sum(dim=1) > 0).all()), "every row needs at least one response token"
    # the batch's earliest response token: positions before it predict nothing that is summed
    first = int(response_mask[:, 1:].float().argmax(dim=1).min()) + 1
    logits = forward_logits(model, input_ids, attention_mask, temperature, first - 1, T - 1)  # (B, T-first, V)
    logp = logprobs_from_logits(logits, input_ids[:, first:])  # (B, T-first)
    return (logp * response_mask[:, first:].to(torch.float32)).sum(dim=1)


def pair_sequence_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`sequence_logprobs` of the chosen and rejected sequences of a preference micro-batch,
    (2B,) = [chosen; rejected], from separate rows ((2B, T) `input_ids`, `attention_mask`,
    `loss_mask`) or from shared-prefix rows (`rlhf.train.collate_shared_pairs` with
    `shared_pair_targets`: the prompt once per pair, each target read at the column that predicts
    it). The LM head runs from the earliest column a summed target is predicted at."""
    if "targets" not in batch:
        return sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    frm, weights = batch["target_from"], batch["target_mask"].to(torch.float32)  # (B, 2, R)
    T = batch["input_ids"].shape[1]
    start = int(frm[weights > 0].min())
    with read_from(model, start):  # the last MLP where logits are kept
        logits = model(input_ids=batch["input_ids"], attention_mask=model_attention_mask(model, batch["attention_mask"]),
                       position_ids=batch["position_ids"], use_cache=False, logits_to_keep=T - start).logits
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T - start, V)
    rows = torch.arange(len(frm), device=frm.device)[:, None, None]  # (B, 1, 1)
    picked = logp[rows, (frm - start).clamp(min=0), batch["targets"]]  # (B, 2, R)
    sums = (picked * weights).sum(dim=-1)  # (B, 2)
    return torch.cat([sums[:, 0], sums[:, 1]])  # (2B,)
