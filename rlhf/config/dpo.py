from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.config.base import CheckpointEvery, GroupByLength, LearningRate, LogEvery, ScheduleName, TrainConfig, WarmupSteps


class DPOConfig(TrainConfig):
    """`dpo` section: direct preference optimisation (Rafailov et al. 2023), its conservative
    variant (label smoothing) and IPO (Azar et al. 2023)."""

    enabled: bool = Field(True, description="false: write SKIPPED and train nothing")
    loss_type: Literal["sigmoid", "ipo"] = Field("sigmoid", description="sigmoid: DPO eq. 7; ipo: IPO eq. 17")
    beta: float = Field(0.1, gt=0, description="beta (DPO) or tau (IPO): strength of the KL anchor to pi_ref")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="epsilon: assumed label-flip rate (cDPO)")
    logp_reduction: Literal["auto", "sum", "mean"] = Field(
        "auto", description="log pi(y|x) summed or averaged over response tokens; auto: mean for IPO "
        "(Azar et al.'s convention, so tau transfers and the pull does not grow with length), sum for DPO")

    epochs: int = Field(1, ge=1, description="passes over pref_train")
    max_steps: int | None = Field(250, ge=1, description="optimizer steps, overriding epochs (a later epoch reshuffles); null: epochs x (pairs // batch_size)")
    batch_size: int = Field(16, ge=1, description="pairs per optimizer step")
    micro_batch_size: int = Field(16, ge=1, description="pairs per forward pass (gradient accumulation)")
    learning_rate: LearningRate = 1e-4
    warmup_steps: WarmupSteps = 5
    schedule: ScheduleName = "linear"
    max_seq_len: int = Field(160, ge=8, description="longest prompt + response in tokens (longer pairs are cut)")
    group_by_length: GroupByLength = False
    share_prompt: bool = Field(True, description="a pair in one row that holds the prompt (their common prefix) once; models with eager or sdpa attention")
    precompute_ref_logprobs: bool = Field(True, description="compute log pi_ref once before training and cache it")
    eval_batch_size: int = Field(32, ge=1, description="pairs per forward pass on pref_heldout")
    eval_pairs: int | None = Field(None, ge=1, description="score the first this many pairs of pref_heldout (null: all)")
    checkpoint_every: CheckpointEvery = 50
    log_every: LogEvery = 1

    @model_validator(mode="after")
    def _check(self) -> "DPOConfig":
        if self.batch_size % self.micro_batch_size:
            raise ValueError("micro_batch_size must divide batch_size")
        if self.loss_type == "ipo" and self.label_smoothing > 0:
            raise ValueError("label_smoothing (cDPO) applies to the sigmoid loss only")
        return self

    @property
    def average_logps(self) -> bool:
        """Whether sequence log-probs are per-token means (else sums over the response)."""
        return self.logp_reduction == "mean" or (self.logp_reduction == "auto" and self.loss_type == "ipo")
