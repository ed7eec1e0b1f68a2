"""TRL's PPOTrainer on the shared fixtures. TRL 1.16 no longer ships PPO; 1.12 is the last release
with `trl.experimental.ppo`, so this module runs in a worker whose PYTHONPATH puts a separate
install of trl==1.12.0 (`pip install --no-deps --target ...`) ahead of the environment's TRL.

Same work as the project's iteration: BATCH prompts of PPO_PROMPT_LEN ids (the fixture prompts,
in order), PPO_NEW_TOKENS sampled at TEMPERATURE, a frozen reference, the fixture reward model as
scorer and as the critic's start, k1 KL penalty with a fixed coefficient, GAE, PPO_EPOCHS epochs of
one minibatch; fp32, or bf16 autocast over the whole of `train()` in a bf16 run. Differences that remain, by design of either side: TRL 1.12 has one AdamW over
policy and critic together and no gradient clipping; it scores the policy's token ids, while the
project's reward model scores the decoded text re-encoded with its own tokenizer (its vocabulary
need not be the policy's); TRL takes log pi_old from the sampler's logits, the project from a
teacher-forced pass. Samples differ (another sampler and random stream), so losses are comparable
only in kind, not value.

Timing: a callback stamps each iteration's end; wrappers around the module's `batch_generation`
and `forward` mark when sampling starts and ends and when the update's first forward starts.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.trl_peer import fixtures as fx
from benchmarks.trl_peer.measure import Result, StepClock, bench_device, flop_params
from benchmarks.trl_peer.project import ppo_flops
from benchmarks.trl_peer.settings import (
    ADAM_BETAS,
    ADAM_EPS,
    BATCH,
    CLIP_EPS,
    GAMMA,
    KL_COEF,
    LAM,
    LEARNING_RATE,
    PPO_EPOCHS,
    PPO_NEW_TOKENS,
    SEED,
    TEMPERATURE,
    VALUE_CLIP,
    VF_COEF,
    WEIGHT_DECAY,
)

TRL_PPO_VERSION = "1.12.0"


class Phases:
    """Per iteration: when sampling started and ended, when the update's first forward started,
    and how many tokens were sampled. Installed over the TRL module's functions of those names."""

    def __init__(self, impl: Any, policy_and_value: type) -> None:
        self.impl, self.wrapper_type = impl, policy_and_value
        self.gen_start: list[float] = []
        self.gen_end: list[float] = []
        self.update_start: list[float] = []
        self.tokens: list[int] = []
        generate, forward = impl.batch_generation, impl.forward

        def timed_generation(model: Any, queries: torch.Tensor, *args: Any, **kwargs: Any):
            self.gen_start.append(time.perf_counter())
            query_responses, logits = generate(model, queries, *args, **kwargs)
            self.gen_end.append(time.perf_counter())
            self.tokens.append(int(query_responses.shape[0] * (query_responses.shape[1] - queries.shape[1])))
            return query_responses, logits

        def marked_forward(model: Any, *args: Any, **kwargs: Any):
            # the update's passes go through the policy-and-value wrapper, the rollout's through the reference
            if isinstance(model, self.wrapper_type) and len(self.update_start) < len(self.gen_end):
                self.update_start.append(time.perf_counter())
            return forward(model, *args, **kwargs)

        impl.batch_generation, impl.forward = timed_generation, marked_forward


def ppo(root: Path, size: str, warmup: int, steps: int, precision: str = "fp32") -> Result:
    """TRL 1.12 PPOTrainer for WARMUP + steps iterations; see the module docstring."""
    import trl
    from datasets import Dataset
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

    assert trl.__version__ == TRL_PPO_VERSION, f"needs trl {TRL_PPO_VERSION} first on the path, not {trl.__version__}"
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as impl

    total = warmup + steps
    tok = AutoTokenizer.from_pretrained(fx.tokenizer_dir(root))
    prompts = fx.read_data(root)["prompts"][: total * BATCH]
    data = Dataset.from_list([{"input_ids": p["ids"]} for p in prompts])
    prompt_len = len(prompts[0]["ids"])  # PPO_PROMPT_LEN, or more for a checkpoint's own chat template
    assert all(len(p["ids"]) == prompt_len for p in prompts)
    policy, reference = (AutoModelForCausalLM.from_pretrained(fx.policy_dir(root, size), dtype=torch.float32)
                         for _ in range(2))
    value, reward_model = (AutoModelForSequenceClassification.from_pretrained(
        fx.reward_dir(root, size), num_labels=1, dtype=torch.float32) for _ in range(2))
    n_lm, n_rm = flop_params(policy, lm_head=True), flop_params(value, lm_head=False)

    clock, logged = StepClock(), []

    class IterationEnds(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.ends[0] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()

    class Logged(PPOTrainer):
        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            logged.append(dict(logs))
            super().log(logs, start_time)

    phases = Phases(impl, impl.PolicyAndValueWrapper)
    with tempfile.TemporaryDirectory() as out:
        args = PPOConfig(
            output_dir=out, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1, num_mini_batches=1,
            num_ppo_epochs=PPO_EPOCHS, total_episodes=total * BATCH, local_rollout_forward_batch_size=BATCH,
            response_length=PPO_NEW_TOKENS, temperature=TEMPERATURE, stop_token="eos", missing_eos_penalty=None,
            kl_coef=KL_COEF, kl_estimator="k1", cliprange=CLIP_EPS, cliprange_value=VALUE_CLIP, vf_coef=VF_COEF,
            gamma=GAMMA, lam=LAM, whiten_rewards=False, num_sample_generations=0,
            learning_rate=LEARNING_RATE, lr_scheduler_type="constant", warmup_steps=0, weight_decay=WEIGHT_DECAY,
            adam_beta1=ADAM_BETAS[0], adam_beta2=ADAM_BETAS[1], adam_epsilon=ADAM_EPS, optim="adamw_torch_fused",
            bf16=precision == "bf16", fp16=False, gradient_checkpointing=False, use_cpu=bench_device() == "cpu", seed=SEED,
            report_to="none",
            save_strategy="no", disable_tqdm=True, dataloader_pin_memory=False,
        )
        trainer = Logged(args=args, processing_class=tok, model=policy, ref_model=reference, reward_model=reward_model,
                         value_model=value, train_dataset=data, eval_dataset=data, callbacks=[IterationEnds()])
        # the fixture prompts in order, as the project takes them (TRL shuffles by default)
        trainer.dataloader = DataLoader(data, batch_size=BATCH, shuffle=False, collate_fn=trainer.data_collator,
                                        drop_last=True)
        # TRL 1.12's PPOTrainer leaves bf16=True unused on the CPU (its losses and speed equal the fp32
        # run's): in a bf16 run its rollout and update run under the autocast the project's do
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16" and bench_device() == "cpu"):
            trainer.train()

    ends = clock.ends[1:]
    gen = [b - a for a, b in zip(phases.gen_start, phases.gen_end)]
    score = [u - g for g, u in zip(phases.gen_end, phases.update_start)]
    update = [e - u for u, e in zip(phases.update_start, ends)]
    losses = [row["loss/policy_avg"] + VF_COEF * row["loss/value_avg"] for row in logged if "loss/policy_avg" in row]
    row = logged[0]
    tokens = BATCH * (prompt_len + PPO_NEW_TOKENS)
    # log pi_old comes from the sampler's logits: no policy pass in the scoring
    flops = ppo_flops(n_lm, n_rm, tokens, sum(phases.tokens[warmup:]) / max(steps, 1), policy_evaluated=0.0)
    metrics = {"loss/policy": row["loss/policy_avg"], "loss/value": row["loss/value_avg"],
               "objective/kl": row["objective/kl"]}
    return Result("trl", "ppo", size, clock.seconds(warmup), BATCH, tokens, flops, losses, metrics,
                  generate_seconds=gen[warmup:], score_seconds=score[warmup:], update_seconds=update[warmup:],
                  generated_tokens=phases.tokens[warmup:], gen_flops_per_token=2.0 * n_lm)


RUNNERS = {"ppo": ppo}
