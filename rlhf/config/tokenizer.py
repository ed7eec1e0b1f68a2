from __future__ import annotations

from pydantic import Field

from rlhf.config.base import StageConfig


class TokenizerConfig(StageConfig):
    """`tokenizer` section: a byte-level BPE trained on the world's text."""

    vocab_size: int = Field(4096, ge=300, le=200_000, description="BPE vocabulary size, special tokens included")
    min_frequency: int = Field(2, ge=1, description="a merge needs at least this many occurrences")
