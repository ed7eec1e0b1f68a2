from __future__ import annotations

from pydantic import Field, model_validator

from rlhf.config.base import (
    CheckpointEvery,
    GroupByLength,
    LearningRate,
    LogEvery,
    MaxSteps,
    MinLrRatio,
    ScheduleName,
    TrainConfig,
    WarmupSteps,
    WeightDecay,
)


class SFTConfig(TrainConfig):
    """`sft` section: supervised fine-tuning on the demonstrations, loss on response tokens only
    (Ouyang et al. 2022, sec. 3.5). Defaults train the embedded GPT-2 in a few CPU minutes."""

    # --- model: a local HF causal LM directory, or the embedded GPT-2 built from this config ---
    model_path: str | None = Field(None, description="local HF causal LM directory (relative to the project root); null: build GPT-2 below")
    trust_remote_code: bool = Field(False, description="run the Python code shipped in model_path (config.json auto_map); only for code you have read and trust")
    n_layer: int = Field(4, ge=1, le=48, description="GPT-2 transformer blocks")
    n_head: int = Field(4, ge=1, le=64, description="GPT-2 attention heads")
    n_embd: int = Field(128, ge=8, le=4096, description="GPT-2 width d_model")
    n_positions: int = Field(128, ge=16, le=8192, description="GPT-2 context length")

    # --- data ---
    max_seq_len: int = Field(128, ge=8, description="longest training sequence in tokens (prompt + response + EOS)")
    packing: bool = Field(True, description="pack whole examples into rows of max_seq_len tokens (less padding)")
    group_by_length: GroupByLength = False

    # --- optimisation (the shared fields are documented in TrainConfig) ---
    max_steps: MaxSteps = 1600
    batch_size: int = Field(4, ge=1, description="sequences (packed rows) per optimizer step, all processes together")
    micro_batch_size: int = Field(4, ge=1, description="sequences per forward pass (gradient accumulation)")
    learning_rate: LearningRate = 2e-3
    weight_decay: WeightDecay = 0.1
    warmup_steps: WarmupSteps = 50
    schedule: ScheduleName = "cosine"
    min_lr_ratio: MinLrRatio = 0.1
    checkpoint_every: CheckpointEvery = 400
    log_every: LogEvery = 20

    # --- evaluation ---
    eval_examples: int = Field(512, ge=1, description="examples of each split used for the train/held-out loss")
    sample_count: int = Field(256, ge=0, description="held-out prompts answered and scored by the gold judge (0: none)")
    sample_max_new_tokens: int = Field(64, ge=1, description="longest sampled response in tokens")
    sample_temperature: float = Field(1.0, ge=0, le=2, description="T of the evaluation samples (0: greedy); 1 samples the learned distribution")
    sample_top_p: float = Field(1.0, gt=0, le=1, description="nucleus mass of the evaluation samples")

    @model_validator(mode="after")
    def _check(self) -> "SFTConfig":
        if self.batch_size % self.micro_batch_size:
            raise ValueError("micro_batch_size must divide batch_size")
        if self.trust_remote_code and self.model_path is None:
            raise ValueError("trust_remote_code applies to the model in model_path, which is null")
        if self.model_path is None:
            if self.n_embd % self.n_head:
                raise ValueError("n_head must divide n_embd")
            if self.max_seq_len > self.n_positions:
                raise ValueError("max_seq_len must not exceed n_positions")
            if self.sample_count and self.sample_max_new_tokens >= self.n_positions:
                raise ValueError("sample_max_new_tokens must leave room for the prompt in n_positions")
        return self
