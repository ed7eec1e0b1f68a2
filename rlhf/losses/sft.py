"""Supervised fine-tuning loss: next-token negative log-likelihood on response tokens only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.ops import masked_sum

IGNORE_INDEX = -100  # cross_entropy's target id that contributes neither loss nor gradient


def shifted_token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(x_{t+1} | x_{<=t}) for every position: (B, T, V), (B, T) -> (B, T-1).

    Column t scores token t+1. Computed as -cross_entropy over the contiguous (B*T, V) rows, the
    last position's target set to the ignored index (loss and gradient 0), then cut: no copy of
    the logits, and the log-softmax runs over the contiguous last dimension. Within 4e-6 of the
    cross-entropy of the transposed (B, V, T-1) view, and faster (`benchmarks/sft_logprobs.py`).
    """
    B, T = input_ids.shape
    targets = F.pad(input_ids[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T): position T-1 scores nothing
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none",
                          ignore_index=IGNORE_INDEX)  # (B*T,); float32 even under bf16 autocast
    return -nll.view(B, T)[:, :-1]  # (B, T-1)


def first_scored_position(loss_mask: torch.Tensor) -> int:
    """The earliest position whose logits the SFT loss reads: the one before the batch's first
    target token (position t predicts token t+1). Logits before it are multiplied by m = 0, so a
    caller may ask the model for positions [first, T) only (`logits_to_keep = T - first`): the LM
    head and the softmax, the costliest layers of a small model with a large vocabulary, then skip
    the prompt. Shape (B, T) -> int."""
    targets = loss_mask[:, 1:].any(dim=0)  # (T-1,): some row has a target at t+1
    assert bool(targets.any()), "SFT loss over an empty loss mask"
    return int(targets.int().argmax())


def sft_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    loss_mask: torch.Tensor,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = -(1/N) * sum_{b,t} m_{b,t+1} * log p(x_{b,t+1} | x_{b,<=t})

    The standard language-modelling objective restricted to response tokens (Ouyang et al. 2022,
    InstructGPT sec. 3.5 "SFT"; prompt and padding positions have m = 0, so neither their ids nor
    the logits predicting them affect the loss).

    Shapes: logits (B, T, V), input_ids (B, T), loss_mask (B, T) with 1 on target tokens (response
    and EOS). All three may start at the same column s > 0 (logits of positions [s, T) with
    `input_ids[:, s:]`, `loss_mask[:, s:]`) when no target lies at or before s: the same loss.
    `num_tokens` = N, the number of loss tokens in the whole optimizer step (all
    micro-batches; see rlhf/train/optim.py); None means this micro-batch's count.
    Returns the loss and {"loss/sft": mean NLL per token of this micro-batch}.
    """
    mask = loss_mask[:, 1:].to(torch.float32)  # (B, T-1): mask of the predicted token
    count = float(mask.sum())
    assert count > 0, "SFT loss over an empty loss mask"
    nll = -shifted_token_logprobs(logits, input_ids)  # (B, T-1)
    total = masked_sum(nll, mask)
    loss = total / (count if num_tokens is None else num_tokens)
    return loss, {"loss/sft": total.detach() / count}
