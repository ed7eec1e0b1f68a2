from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.config.base import Precision, StageConfig

JudgeName = Literal["gold", "reward_model", "refusal", "llm"]


class LLMJudgeConfig(StageConfig):
    """`evaluate.llm`: the LLM judge's OpenAI-compatible chat-completions endpoint (docs/judges.md)."""

    base_url: str | None = Field(None, description="endpoint base, e.g. http://127.0.0.1:8000/v1 (POST <base_url>/chat/completions)")
    model: str | None = Field(None, description="the judge model's name at that endpoint")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="NAME of the environment variable holding the API key (None: no key)")
    timeout_s: float = Field(60.0, gt=0, description="seconds to wait for one answer")
    max_retries: int = Field(3, ge=0, description="retries of a request that failed on I/O (unreachable, timeout, HTTP 429/5xx)")


class EvaluateConfig(StageConfig):
    """`evaluate` section: sample every trained policy (and the best-of-n baselines) on eval_prompts
    with the same settings; score the responses with the judges, the proxy reward model and the KL
    to pi_ref (SFT), each mean with a bootstrap interval."""

    seed: int = Field(0, ge=0, description="sampling seed, the same for every policy")
    temperature: float = Field(0.7, gt=0, le=2, description="T: sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass p")
    max_new_tokens: int = Field(64, ge=1, description="longest response in tokens")
    batch_size: int = Field(64, ge=1, description="prompts per sampling batch")
    max_prompts: int | None = Field(None, ge=1, description="evaluate this many prompts of each prompt set, evenly spaced over it (None: all)")
    table_rows: int = Field(12, ge=0, description="sample rows per policy in the samples table")
    judges: list[JudgeName] = Field(["gold"], description="judges beside the proxy score and the KL: gold, reward_model, refusal, llm")
    reward_model_path: str | None = Field(None, description="the reward_model judge's model dir, relative to the project root (None: the pipeline's)")
    llm: LLMJudgeConfig = Field(LLMJudgeConfig(), description="the llm judge's endpoint")
    bootstrap_samples: int = Field(1000, ge=1, description="B: resamples of each 95% percentile bootstrap interval")
    best_of_n: list[int] = Field([4, 16], description="n of each best-of-n baseline bon<n> (n SFT samples, the proxy RM's best kept)")
    mixed_precision: Precision = "auto"

    @model_validator(mode="after")
    def _check(self) -> "EvaluateConfig":
        if len(set(self.judges)) != len(self.judges):
            raise ValueError(f"evaluate.judges: {self.judges} names a judge twice")
        if any(n < 2 for n in self.best_of_n) or len(set(self.best_of_n)) != len(self.best_of_n):
            raise ValueError(f"evaluate.best_of_n: {self.best_of_n} must be distinct integers >= 2 (n = 1 is SFT itself)")
        if "llm" in self.judges and (self.llm.base_url is None or self.llm.model is None):
            raise ValueError("evaluate.judges lists llm, so evaluate.llm.base_url and evaluate.llm.model must be set")
        return self
