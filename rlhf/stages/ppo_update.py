"""Step 5 of the `ppo` stage (rlhf/stages/ppo.py): K epochs of clipped policy and value losses over
minibatches of the frozen batch, and the forward passes that read log pi and V(s_t).

The update's first minibatch runs at pi_old and V_old: no optimizer step has been taken yet. Where
each process's share of that minibatch is one micro-batch, its forward pass also serves as step 2
for its rows (`FirstMinibatch`): the stage leaves those rows out of the no-grad evaluation pass, reads
log pi_old, V_old and the entropy from this forward (detached), computes steps 3-4, and the update
takes its first loss from the same forward. The policy and critic then run one teacher-forced pass
fewer over those rows, and the first minibatch's ratio pi / pi_old is exactly 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from rlhf.config.ppo import PPOConfig
from rlhf.logprobs import logprobs_and_entropy, response_logits
from rlhf.losses.ppo import ppo_policy_loss, ppo_value_loss
from rlhf.ops import masked_sum
from rlhf.train.last_mlp import read_from
from rlhf.train.lora import lora_enabled
from rlhf.train.optim import nonfinite, summed_over_processes

FORWARD_KEYS = ("logprobs", "entropy", "values")  # what a response forward gives per response token


def token_values(critic: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The critic's value at every position (through its forward, so that DDP sees the pass), read
    from column `start` on: the last block's MLP runs there only (rlhf/train/last_mlp.py), so the
    columns before it hold no value. Shapes: (B, T), (B, T) -> (B, T)."""
    with read_from(critic, start):
        return critic(input_ids, attention_mask, per_token=True)  # (B, T)


def response_forward(policy: Any, critic: Any, seqs: torch.Tensor, attn: torch.Tensor, prompt_len: int,
                     temperature: float, entropy_grad: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per response token: log pi (logits / T), entropy (with gradients only if `entropy_grad`),
    and V (None without a critic).

    seqs, attn: (B, P + R) left-padded prompts then responses. The logits at column P-1+t predict
    response token t, and V(s_t) is read at the same column (the state before token t).
    Returns (B, R), (B, R), (B, R).
    """
    logits = response_logits(policy, seqs, attn, prompt_len, temperature)  # (B, R, V)
    logprobs, entropy = logprobs_and_entropy(logits, seqs[:, prompt_len:], entropy_grad)  # (B, R), (B, R)
    values = None
    if critic is not None:
        values = token_values(critic, seqs, attn, prompt_len - 1)[:, prompt_len - 1: -1]  # (B, R)
    return logprobs, entropy, values


def trim_padding(batch: dict, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Rows `idx` without the columns that are padding in all of them: leading prompt padding and
    trailing response padding. Position ids come from the attention mask, so nothing else changes.
    Returns seqs (b, p + r), attn (b, p + r), p, r with p <= P, r <= R."""
    prompt_len = batch["prompt_len"]
    attn = batch["attn"][idx]  # (b, P + R)
    first = int(attn[:, :prompt_len].any(dim=0).long().argmax())  # first prompt column in use
    r_len = int(batch["mask"][idx].sum(dim=1).max())
    cols = slice(first, prompt_len + r_len)
    return batch["seqs"][idx][:, cols], attn[:, cols], prompt_len - first, r_len


def micro_forward(cfg: PPOConfig, policy: Any, critic: Any, batch: dict, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The update's forward pass over rows `idx`, trimmed of their common padding: log pi, entropy
    and V per response token, each (b, r) with r the rows' longest response."""
    seqs, attn, p_len, _ = trim_padding(batch, idx)  # (b, p + r), (b, p + r), p, r
    out = response_forward(policy, critic, seqs, attn, p_len, cfg.temperature, entropy_grad=cfg.entropy_coef != 0)
    return dict(zip(FORWARD_KEYS, out))


def micro_step(cfg: PPOConfig, policy: Any, critic: Any, batch: dict, idx: torch.Tensor, num_tokens: float,
               forward: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """The loss of micro-batch `idx` as its share of the minibatch's `num_tokens` response tokens:
    (loss, share, its metrics as means over the micro-batch's tokens). `forward`: the micro-batch's
    `micro_forward`, when it has already run (`FirstMinibatch`)."""
    fwd = forward if forward is not None else micro_forward(cfg, policy, critic, batch, idx)
    r_len = fwd["logprobs"].shape[1]
    mask = batch["mask"][idx, :r_len]  # (b, r)
    frozen = {k: batch[k][idx, :r_len] for k in ("logprobs", "values", "advantages", "returns")}
    pg_loss, pg_m = ppo_policy_loss(fwd["logprobs"], frozen["logprobs"], frozen["advantages"], mask, cfg.clip_eps,
                                    num_tokens)
    vf_loss, vf_m = ppo_value_loss(fwd["values"], frozen["values"], frozen["returns"], mask, cfg.value_clip, num_tokens)
    entropy_term = masked_sum(fwd["entropy"], mask) / num_tokens
    total = pg_loss + cfg.vf_coef * vf_loss - cfg.entropy_coef * entropy_term
    # metrics: token-weighted means over the minibatch (the losses are shares of it)
    share = float(mask.sum()) / num_tokens
    parts = {**pg_m, **vf_m, "loss/policy": pg_loss.detach() / share,
             "loss/value": vf_loss.detach() / share, "policy/entropy": entropy_term.detach() / share}
    return total, share, parts


def minibatch_order(n: int, cfg: PPOConfig, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """One epoch's minibatches: a permutation of the n rows drawn from `generator`, split into
    `mini_batch_size` rows each."""
    return torch.randperm(n, generator=generator).split(cfg.mini_batch_size)


class FirstMinibatch:
    """The update's first minibatch, whose forward pass also gives its rows' log pi_old, V_old and
    entropy (step 2), before steps 3-4 need them. `plan` returns None where that does not hold
    exactly: when a process's share of the minibatch is split into micro-batches (their graphs would
    all have to wait for steps 3-4), with LoRA dropout (the update's forward is then random, the
    evaluation's is not) and with FSDP (its sharded forward is not run outside the update).

    With P processes, process p runs the forward over its share `rows[p::P]`, as the update will,
    and the shares' detached outputs are gathered, so that every process holds the whole batch.

    Use: `first = FirstMinibatch.plan(...)`; `make_experience(..., first=first)` evaluates every row
    but `first.rows` without gradients, then calls `first.run(batch)` on the gathered batch;
    `ppo_update(..., first=first)` takes its first loss from that forward.
    """

    def __init__(self, cfg: PPOConfig, policy: Any, critic: Any, rows: torch.Tensor, accelerator: Any):
        self.cfg, self.policy, self.critic, self.rows, self.accelerator = cfg, policy, critic, rows, accelerator
        self.mine = rows[accelerator.process_index::accelerator.num_processes]  # this process's share
        self.forward: dict[str, torch.Tensor] | None = None

    @classmethod
    def plan(cls, cfg: PPOConfig, policy: Any, critic: Any, accelerator: Any, n: int, seed: int
             ) -> FirstMinibatch | None:
        """The first minibatch that `ppo_update(..., seed)` will draw from a batch of n rows, or None
        where its forward cannot stand in for the evaluation pass."""
        procs = accelerator.num_processes
        share = -(-min(cfg.mini_batch_size, n) // procs)  # a process's rows of the minibatch, at most
        if (cfg.micro_batch_size < share or (lora_enabled(cfg) and cfg.lora_dropout > 0)
                or (procs > 1 and cfg.fsdp)):
            return None
        return cls(cfg, policy, critic, minibatch_order(n, cfg, torch.Generator().manual_seed(seed))[0], accelerator)

    def run(self, batch: dict) -> None:
        """The forward over this process's share with gradients, in training mode as the update runs
        it; writes the detached log pi, V and entropy of every process's share into `batch`'s (N, R)
        tensors at `rows` (zero past each row's longest response, where the mask is 0) and keeps
        this process's forward for the update."""
        self.policy.train()
        self.critic.train()
        with torch.enable_grad():
            self.forward = micro_forward(self.cfg, self.policy, self.critic, batch, self.mine)
        procs = self.accelerator.num_processes
        order = torch.cat([self.rows[p::procs] for p in range(procs)])  # the gathered rows, process by process
        for key, t in self.forward.items():
            out = batch[key]  # (N, R)
            share = torch.zeros(len(self.mine), out.shape[1], dtype=out.dtype, device=out.device)
            share[:, : t.shape[1]] = t.detach()
            out[order] = self.accelerator.gather(share) if procs > 1 else share

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The kept forward, once, for micro-batch `idx` (which must be this process's share)."""
        assert self.forward is not None, "FirstMinibatch.run has not run: make_experience(..., first=...) runs it"
        assert torch.equal(idx, self.mine), "the update drew another first minibatch than the one planned"
        forward, self.forward = self.forward, None
        return forward


def ppo_update(cfg: PPOConfig, policy: Any, critic: Any, opt_policy: Any, opt_value: Any, accelerator: Any,
               batch: dict, seed: int, guard: Callable[[dict[str, float]], bool] = lambda q: not nonfinite(q),
               first: FirstMinibatch | None = None) -> list[dict[str, float]]:
    """K epochs over shuffled minibatches of the frozen batch (the order drawn from `seed`); one dict
    of metrics per optimizer step.

    Each minibatch is split into micro-batches whose losses are normalised by the minibatch's
    token count, so gradient accumulation equals one large-batch step (STYLE rule 8). With P
    processes each takes every P-th row of the minibatch and scales its loss by P, since DDP
    averages the gradients: the step and its metrics are those of one process.
    `guard` gets each step's `loss`, `grad_norm/policy` and `grad_norm/value` (before clipping) and
    says whether to apply it (default: when all are finite; `TrainingRun.guard` may also stop the
    stage); a step it refuses leaves both models and their optimizers as they were.
    `first`: the first minibatch's forward, already run by `make_experience` (`FirstMinibatch`).
    """
    n, procs = batch["seqs"].shape[0], accelerator.num_processes
    order = torch.Generator().manual_seed(seed)
    policy.train()
    critic.train()
    stats: list[dict[str, float]] = []
    for _ in range(cfg.ppo_epochs):
        for mb in minibatch_order(n, cfg, order):  # (mini_batch_size,) indices
            num_tokens = float(batch["mask"][mb].sum())  # the whole minibatch's, on every process
            sums: dict[str, float] = {}
            loss = 0.0
            micro = mb[accelerator.process_index::procs].split(cfg.micro_batch_size)
            for i, idx in enumerate(micro):
                with contextlib.ExitStack() as unsynced:  # DDP decides at the forward: sync on the last micro-batch
                    if i < len(micro) - 1:
                        for model in (policy, critic):
                            unsynced.enter_context(accelerator.no_sync(model))
                    forward = first.take(idx) if first is not None and not stats else None
                    total, share, parts = micro_step(cfg, policy, critic, batch, idx, num_tokens, forward)
                    accelerator.backward(total * procs)
                loss += float(total.detach())
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * share
            if procs > 1:  # the shares of every process
                sums, loss = summed_over_processes(accelerator, sums, loss)
            norms = {f"grad_norm/{name}": float(accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
                     for name, model in (("policy", policy), ("value", critic))}
            sums.update(norms)
            apply = guard({"loss": loss, **norms})  # a NaN or infinite step never reaches the weights
            for opt in (opt_policy, opt_value):
                if apply:
                    opt.step()
                opt.zero_grad(set_to_none=True)
            stats.append(sums)
    policy.eval()
    critic.eval()
    return stats
