"""The best-of-n baseline: n SFT samples per prompt, the one the proxy reward model scores highest
is kept (Stiennon et al. 2020; Gao et al. 2022), and judged like a policy named `bon<n>`.

Its KL to the reference is known in closed form: selecting the best of n i.i.d. samples of pi_ref
gives KL(pi_bon || pi_ref) = log n - (n - 1) / n nats (Stiennon et al. 2020, Appendix G.3; Gao et al.
2022, eq. 1; exact for continuous scores without ties, an upper bound otherwise).
One pool of max(n) samples per prompt serves every n: `bon<n>` picks among the pool's first n.
"""

from __future__ import annotations

import math

import torch


def policy_name(n: int) -> str:
    return f"bon{n}"


def best_of_n_kl(n: int) -> float:
    """log n - (n - 1) / n, in nats; 0 at n = 1."""
    assert n >= 1
    return math.log(n) - (n - 1) / n


def best_of_n_choice(scores: torch.Tensor, n: int) -> torch.Tensor:
    """scores (N, K) of K pooled samples per prompt -> (N,) the pool index of the highest-scoring
    among the first n (the first of equal maxima)."""
    assert scores.dim() == 2 and 1 <= n <= scores.shape[1], f"n={n} needs a pool of at least n samples"
    return scores[:, :n].argmax(dim=1)  # (N,)
