from __future__ import annotations

from pydantic import Field

from rlhf.config.base import StageConfig


class EvaluateConfig(StageConfig):
    """`evaluate` section: sample every trained policy on eval_prompts with the same settings and
    score the responses with the gold judge, the proxy reward model and the KL to pi_ref (SFT)."""

    seed: int = Field(0, ge=0, description="sampling seed, the same for every policy")
    temperature: float = Field(0.7, gt=0, le=2, description="T: sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass p")
    max_new_tokens: int = Field(64, ge=1, description="longest response in tokens")
    batch_size: int = Field(64, ge=1, description="prompts per sampling batch")
    max_prompts: int | None = Field(None, ge=1, description="evaluate only the first this many prompts (None: all)")
    table_rows: int = Field(12, ge=0, description="sample rows per policy in the samples table")
