from __future__ import annotations

from pydantic import Field

from rlhf.config.base import StageConfig


class ValidateConfig(StageConfig):
    """`validate` section: the checks every dataset passes before training reads it."""

    # Long enough for multi-turn HH-RLHF prompts (harmless-base/test: at most 3486 characters);
    # short enough to catch a whole document pasted into one field.
    max_chars: int = Field(
        8192, ge=1, description="longest allowed prompt, response, chosen or rejected text, in characters"
    )
    max_problems_shown: int = Field(
        5, ge=1, description="problems (or warnings) listed in a failure message or a summary"
    )
