from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.config.base import AdamBeta2, AdamEps, CheckpointEvery, LearningRate, MaxSteps, Precision, TrainConfig


class PPOConfig(TrainConfig):
    """`ppo` section: PPO with a KL-shaped reward (Ziegler et al. 2019; Ouyang et al. 2022;
    the "N+ implementation details" of Huang et al. 2024). The shared training fields (AdamW,
    schedule, clipping, precision, checkpoints) are documented in TrainConfig; here a step is one
    PPO iteration (rollout + update), and the learning-rate schedule advances once per iteration."""

    enabled: bool = Field(True, description="false: write SKIPPED and train nothing")

    # --- rollouts ---
    max_steps: MaxSteps = 64
    rollout_batch_size: int = Field(32, ge=2, description="N: prompts sampled per iteration")
    temperature: float = Field(0.7, gt=0, le=2, description="T: sampling temperature; log-probs use logits / T")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass p; must be 1 (see _check)")
    max_new_tokens: int = Field(64, ge=1, description="longest response in tokens")
    max_prompt_len: int | None = Field(
        None, ge=1, description="longer prompts keep BOS and their last this many tokens; null: every prompt must fit")
    missing_eos_score: float | None = Field(
        -1.0, description="score r given to a response with no EOS (normalised RM units); null: the RM scores it")

    # --- reward shaping ---
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="per-token KL estimator in the penalty (Schulman 2020)")
    beta: float = Field(0.2, ge=0, description="beta: KL coefficient of the penalty (initial value when adaptive)")
    adaptive_kl: bool = Field(False, description="adapt beta with Ziegler's proportional controller")
    target_kl: float = Field(4.0, gt=0, description="KL_target of the adaptive controller (nats per sequence)")
    kl_horizon: int = Field(1_000, ge=1, description="H: controller horizon, in episodes")
    whiten_rewards: bool = Field(False, description="whiten the per-token rewards before GAE (shift kept)")
    score_clip: float | None = Field(None, gt=0, description="clip |r| of the normalised score to this value")

    # --- advantages and losses ---
    gamma: float = Field(1.0, ge=0, le=1, description="gamma: discount")
    lam: float = Field(0.95, ge=0, le=1, description="lambda: GAE trace decay")
    clip_eps: float = Field(0.2, gt=0, lt=1, description="epsilon: policy ratio clip range")
    value_clip: float = Field(0.2, gt=0, description="epsilon_v: value clip range around V_old")
    vf_coef: float = Field(0.1, gt=0, description="c_1: value-loss coefficient")
    entropy_coef: float = Field(0.0, ge=0, description="c_2: entropy bonus coefficient")

    # --- optimisation ---
    ppo_epochs: int = Field(4, ge=1, description="K: passes over each rollout batch")
    mini_batch_size: int = Field(8, ge=1, description="sequences per optimizer step")
    micro_batch_size: int = Field(8, ge=1, description="sequences per forward pass (gradient accumulation)")
    learning_rate: LearningRate = 3e-5
    value_learning_rate: float = Field(1e-4, gt=0, le=1, description="critic learning rate (same schedule as the policy's)")
    adam_beta2: AdamBeta2 = 0.999  # Adam's own defaults, with eps 1e-5 as in the PPO baselines
    adam_eps: AdamEps = 1e-5
    # fp32 by default: rollout and update run under the same autocast either way, so the ratio
    # pi / pi_old is exactly 1 on the first minibatch; bf16 trades that precision for speed on CUDA
    mixed_precision: Precision = "no"
    checkpoint_every: CheckpointEvery = 16

    @model_validator(mode="after")
    def _check(self) -> "PPOConfig":
        if self.rollout_batch_size % self.mini_batch_size:
            raise ValueError("mini_batch_size must divide rollout_batch_size")
        if self.mini_batch_size % self.micro_batch_size:
            raise ValueError("micro_batch_size must divide mini_batch_size")
        if self.top_p < 1:
            # the sampler would draw from the truncated nucleus while the old, new and reference
            # log-probs use the full softmax(logits / T): off-policy samples and a biased k1 KL
            raise ValueError("top_p < 1 is not supported by PPO: rollouts must come from the policy whose "
                             "log-probs are trained (softmax(logits / T)); set top_p: 1.0 and tune temperature")
        if self.missing_eos_score is not None and self.missing_eos_score > 0:
            raise ValueError("missing_eos_score is a penalty: it must be <= 0")
        return self
