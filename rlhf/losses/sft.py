"""Supervised fine-tuning loss: next-token negative log-likelihood on response tokens only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.ops import masked_sum


def shifted_token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(x_{t+1} | x_{<=t}) for every position: (B, T, V), (B, T) -> (B, T-1).

    Column t scores token t+1. Computed as -cross_entropy, which never materialises the full
    (B, T-1, V) log-softmax a second time.
    """
    logits = logits[:, :-1].float()  # (B, T-1, V); float32 even under bf16 autocast
    targets = input_ids[:, 1:]  # (B, T-1)
    return -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T-1)


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
    and EOS). `num_tokens` = N, the number of loss tokens in the whole optimizer step (all
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
