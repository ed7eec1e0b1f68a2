from __future__ import annotations

from pydantic import Field, model_validator

from rlhf.config.base import (
    CheckpointEvery,
    GroupByLength,
    LearningRate,
    LogEvery,
    MaxSteps,
    ScheduleName,
    TrainConfig,
    WarmupSteps,
)


class RewardConfig(TrainConfig):
    """`reward` section: a Bradley-Terry reward model (Ouyang et al. 2022 eq. 1) initialised from
    the SFT model, with the head and normalisation of Huang et al. 2024 ("N+ details")."""

    # --- model ---
    model_path: str | None = Field(None, description="local HF model directory for the backbone (relative to the project root); null: the SFT model")
    trust_remote_code: bool = Field(False, description="run the Python code shipped in model_path (config.json auto_map); only for code you have read and trust")
    freeze_backbone: bool = Field(False, description="train the scalar head only (a linear probe)")
    max_seq_len: int = Field(128, ge=8, description="longest scored sequence; longer ones lose prompt tokens after BOS")
    group_by_length: GroupByLength = True
    share_prompt: bool = Field(True, description="score a pair in one row that holds the prompt (their common prefix) once; decoders with eager or sdpa attention")

    # --- loss ---
    margin: float = Field(0.0, ge=0, description="m: -log sigmoid(r_c - r_r - m) (Llama 2 eq. 2); 0 = plain BT")
    center_coef: float = Field(0.0, ge=0, description="eta: reward-centering penalty eta * (r_c + r_r)^2 (Eisenstein et al. 2023)")

    # --- optimisation (the shared fields are documented in TrainConfig) ---
    max_steps: MaxSteps = 500
    batch_size: int = Field(16, ge=1, description="preference pairs per optimizer step, all processes together")
    micro_batch_size: int = Field(16, ge=1, description="pairs per forward pass (2x rows: chosen and rejected)")
    learning_rate: LearningRate = 1e-3
    warmup_steps: WarmupSteps = 10
    schedule: ScheduleName = "linear"
    checkpoint_every: CheckpointEvery = 250
    log_every: LogEvery = 10

    # --- normalisation ---
    norm_examples: int = Field(512, ge=2, description="SFT demonstrations scored for the reward mean/std stored with the model")

    @model_validator(mode="after")
    def _check(self) -> "RewardConfig":
        if self.batch_size % self.micro_batch_size:
            raise ValueError("micro_batch_size must divide batch_size")
        if self.trust_remote_code and self.model_path is None:
            raise ValueError("trust_remote_code applies to the model in model_path, which is null")
        return self
