"""Every setting the two sides share, in one place. Both sides read these and nothing else, so a
difference in the table comes from the implementations, not from their configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    """A GPT-2 shape (Radford et al. 2019): L blocks of width d with h heads."""

    n_layer: int
    n_head: int
    n_embd: int


SIZES = {
    "tiny": Size(n_layer=4, n_head=4, n_embd=256),
    "small": Size(n_layer=8, n_head=8, n_embd=512),
}
TRAINERS = ("sft", "reward", "dpo", "ppo")

VOCAB = 4096  # BPE vocabulary: the pipeline's tokenizer.vocab_size (params.yaml)
N_POSITIONS = 128  # context of every model
SEED = 0  # weights, token sequences, sampling

# --- data: fixed lengths, so that every step does the same work on both sides
BATCH = 8  # sequences (SFT), pairs (reward, DPO) or prompts (PPO) per optimizer step; no accumulation
PROMPT_LEN = 64  # prompt tokens of an SFT / preference sequence, BOS first
RESPONSE_LEN = 64  # response tokens, EOS last; SEQ_LEN = PROMPT_LEN + RESPONSE_LEN = 128
SEQ_LEN = PROMPT_LEN + RESPONSE_LEN
PPO_PROMPT_LEN = 32  # chat-formatted PPO prompt, BOS first
PPO_NEW_TOKENS = 32  # tokens sampled per PPO response

# --- precision: fp32 everywhere, or bf16 autocast on both sides (fp32 weights, gradients and optimizer
# state; matmuls in bf16). `trl_compare.py --precision` picks one for the whole run.
PRECISIONS = ("fp32", "bf16")

# --- optimizer: AdamW (Loshchilov & Hutter 2019), constant learning rate
LEARNING_RATE = 1e-4  # eta, also the PPO critic's
ADAM_BETAS = (0.9, 0.999)  # beta_1, beta_2
ADAM_EPS = 1e-8  # epsilon
WEIGHT_DECAY = 0.0
MAX_GRAD_NORM = 1.0  # global clip per model (TRL 1.12's PPO does not clip: see peer_ppo)

# --- losses
DPO_BETA = 0.1  # beta of DPO (Rafailov et al. 2023, eq. 7), sigmoid loss, summed log-probs
KL_COEF = 0.05  # beta of the PPO per-token KL penalty (fixed), k1 estimator
TEMPERATURE = 0.7  # T of PPO sampling and of its log-probs
PPO_EPOCHS = 4  # K passes over each rollout batch, one minibatch of BATCH each
CLIP_EPS = 0.2  # policy ratio clip
VALUE_CLIP = 0.2  # value clip around V_old
VF_COEF = 0.1  # c_1
GAMMA, LAM = 1.0, 0.95  # discount and GAE lambda
# a response without EOS keeps its reward-model score on both sides (project: missing_eos_score None,
# TRL: missing_eos_penalty None): the two treat it differently otherwise (replace vs subtract)

# --- timing
WARMUP_STEPS = 2  # optimizer steps (PPO: iterations) run before the clock starts: allocator, kernels
