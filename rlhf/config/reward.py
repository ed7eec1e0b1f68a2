from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.config.base import StageConfig


class RewardConfig(StageConfig):
    """`reward` section: a Bradley-Terry reward model (Ouyang et al. 2022 eq. 1) initialised from
    the SFT model, with the head and normalisation of Huang et al. 2024 ("N+ details")."""

    seed: int = Field(0, ge=0, description="seed of head initialisation and data order")

    # --- model ---
    model_path: str | None = Field(None, description="local HF model directory for the backbone (relative to the project root); null: the SFT model")
    freeze_backbone: bool = Field(False, description="train the scalar head only (a linear probe)")
    max_seq_len: int = Field(128, ge=8, description="longest scored sequence; longer ones lose prompt tokens after BOS")

    # --- loss ---
    margin: float = Field(0.0, ge=0, description="m: -log sigmoid(r_c - r_r - m) (Llama 2 eq. 2); 0 = plain BT")
    center_coef: float = Field(0.0, ge=0, description="eta: reward-centering penalty eta * (r_c + r_r)^2 (Eisenstein et al. 2023)")

    # --- optimisation ---
    max_steps: int = Field(500, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="preference pairs per optimizer step, all processes together")
    micro_batch_size: int = Field(16, ge=1, description="pairs per forward pass (2x rows: chosen and rejected)")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="peak AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW decoupled weight decay, matrices only")
    warmup_steps: int = Field(10, ge=0, description="linear warmup steps")
    schedule: Literal["cosine", "linear", "constant"] = Field("linear", description="decay after warmup")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final learning rate / peak")
    max_grad_norm: float = Field(1.0, gt=0, description="global gradient-norm clip")
    mixed_precision: Literal["auto", "no", "bf16"] = Field("auto", description="'auto': bf16 autocast on CUDA, fp32 on CPU")

    # --- checkpoints, logging, normalisation ---
    checkpoint_every: int = Field(250, ge=1, description="save a resumable checkpoint every this many steps (and at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept")
    log_every: int = Field(10, ge=1, description="history rows every this many steps")
    norm_examples: int = Field(512, ge=2, description="SFT demonstrations scored for the reward mean/std stored with the model")

    @model_validator(mode="after")
    def _check(self) -> "RewardConfig":
        if self.batch_size % self.micro_batch_size:
            raise ValueError("micro_batch_size must divide batch_size")
        if self.warmup_steps > self.max_steps:
            raise ValueError("warmup_steps must not exceed max_steps")
        return self

    @property
    def grad_accum_steps(self) -> int:
        return self.batch_size // self.micro_batch_size
