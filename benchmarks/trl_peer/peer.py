"""TRL's SFTTrainer, RewardTrainer and DPOTrainer (the `bench` dependency group) on the shared
fixtures, timed the same way as the project's steps.

Each trainer gets the fixture model loaded with `AutoModelFor*.from_pretrained`, the fixture token
sequences as an already tokenized dataset in step order (`train_sampling_strategy="sequential"`),
and the shared settings: batch BATCH without accumulation, AdamW (fused, as the project's) at a
constant learning rate, the same clip, the run's precision (fp32, or bf16 autocast as the project's),
no gradient checkpointing (TRL's defaults turn on bf16 and checkpointing). The only change to TRL's own code path is DPO's dataset preparation,
which is skipped: it tokenises text, and the ids are given. A subclass records the loss that
`training_step` returns and TRL's step-1 metrics; a callback stamps the end of every optimizer step.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.trl_peer import fixtures as fx
from benchmarks.trl_peer.measure import Result, StepClock, bench_device, flop_params
from benchmarks.trl_peer.settings import (
    ADAM_BETAS,
    ADAM_EPS,
    BATCH,
    DPO_BETA,
    LEARNING_RATE,
    MAX_GRAD_NORM,
    SEED,
    SEQ_LEN,
    WEIGHT_DECAY,
)


def common_args(out_dir: str, total: int, precision: str) -> dict[str, Any]:
    """The `TrainingArguments` fields every TRL config here shares (module docstring)."""
    return dict(
        output_dir=out_dir, max_steps=total, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        learning_rate=LEARNING_RATE, lr_scheduler_type="constant", warmup_steps=0, weight_decay=WEIGHT_DECAY,
        adam_beta1=ADAM_BETAS[0], adam_beta2=ADAM_BETAS[1], adam_epsilon=ADAM_EPS, max_grad_norm=MAX_GRAD_NORM,
        optim="adamw_torch_fused", bf16=precision == "bf16", fp16=False, gradient_checkpointing=False,
        use_cpu=bench_device() == "cpu",
        train_sampling_strategy="sequential", seed=SEED, data_seed=SEED, logging_strategy="no",
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=False,
    )


def recorded(trainer_cls: type) -> type:
    """`trainer_cls` with a list `step_losses` of the loss of every `training_step` (one per
    optimizer step here: no accumulation), `step1_metrics` (TRL's own, of step 1) and a `clock`
    ticked at the end of every step."""
    from transformers import TrainerCallback

    class StepEnds(TrainerCallback):
        def __init__(self, clock: StepClock) -> None:
            self.clock = clock

        def on_train_begin(self, args, state, control, **kwargs):
            self.clock.ends[0] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.clock.tick()

    class Recorded(trainer_cls):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.step_losses: list[float] = []
            self.step1_metrics: dict[str, float] = {}
            self.clock = StepClock()
            super().__init__(*args, callbacks=[StepEnds(self.clock)], **kwargs)

        def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            loss = super().training_step(*args, **kwargs)
            self.step_losses.append(float(loss))
            if len(self.step_losses) == 1:  # TRL's metric lists are cleared when it logs, at the end
                self.step1_metrics = {k: float(v[0]) for k, v in self._metrics["train"].items() if v}
            return loss

    return Recorded


def first(trainer: Any, **names: str) -> dict[str, float]:
    """Step-1 values of TRL's own training metrics, under the project's names: {ours: TRL's}."""
    return {ours: trainer.step1_metrics[theirs] for ours, theirs in names.items()}


def sft(root: Path, size: str, warmup: int, steps: int, precision: str = "fp32") -> Result:
    """SFTTrainer on pre-tokenized rows with `labels` (-100 on the prompt): its loss is the summed
    NLL of the label tokens over the step's label-token count, as the project's."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    total = warmup + steps
    rows = fx.read_data(root)["sft"][: total * BATCH]
    data = Dataset.from_list([{"input_ids": r["input_ids"],
                               "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["loss_mask"])]}
                              for r in rows])
    model = AutoModelForCausalLM.from_pretrained(fx.policy_dir(root, size), dtype=torch.float32)
    n = flop_params(model, lm_head=True)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(**common_args(out, total, precision), max_length=SEQ_LEN, packing=False, padding_free=False)
        trainer = recorded(SFTTrainer)(model=model, args=args, train_dataset=data,
                                       processing_class=AutoTokenizer.from_pretrained(fx.tokenizer_dir(root)))
        trainer.train()
    return Result("trl", "sft", size, trainer.clock.seconds(warmup), BATCH, BATCH * SEQ_LEN,
                  6.0 * n * BATCH * SEQ_LEN, trainer.step_losses)


def reward(root: Path, size: str, warmup: int, steps: int, precision: str = "fp32") -> Result:
    """RewardTrainer on pre-tokenized chosen / rejected ids (prompt included): -log sigma(r_c - r_r)
    averaged over the pairs, with the sequence classifier's own last-token pooling."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    total = warmup + steps
    pairs = fx.read_data(root)["pairs"][: total * BATCH]
    data = Dataset.from_list([{"chosen_ids": p["prompt"] + p["chosen"], "rejected_ids": p["prompt"] + p["rejected"]}
                              for p in pairs])
    model = AutoModelForSequenceClassification.from_pretrained(fx.reward_dir(root, size), num_labels=1,
                                                               dtype=torch.float32)
    n = flop_params(model, lm_head=False)
    with tempfile.TemporaryDirectory() as out:
        args = RewardConfig(**common_args(out, total, precision), max_length=SEQ_LEN)
        trainer = recorded(RewardTrainer)(model=model, args=args, train_dataset=data,
                                          processing_class=AutoTokenizer.from_pretrained(fx.tokenizer_dir(root)))
        trainer.train()
    return Result("trl", "reward", size, trainer.clock.seconds(warmup), BATCH, 2 * BATCH * SEQ_LEN,
                  6.0 * n * 2 * BATCH * SEQ_LEN, trainer.step_losses,
                  first(trainer, **{"rewards/accuracies": "accuracy", "rewards/margins": "margin"}))


def dpo(root: Path, size: str, warmup: int, steps: int, precision: str = "fp32") -> Result:
    """DPOTrainer, sigmoid loss, a separate reference model run in every step (TRL's default
    `precompute_ref_log_probs=False`), on the given prompt / chosen / rejected ids."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    class GivenIds(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # already prompt_ids / chosen_ids / rejected_ids

    total = warmup + steps
    pairs = fx.read_data(root)["pairs"][: total * BATCH]
    data = Dataset.from_list([{"prompt_ids": p["prompt"], "chosen_ids": p["chosen"], "rejected_ids": p["rejected"]}
                              for p in pairs])
    model = AutoModelForCausalLM.from_pretrained(fx.policy_dir(root, size), dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(fx.policy_dir(root, size), dtype=torch.float32)
    n = flop_params(model, lm_head=True)
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(**common_args(out, total, precision), beta=DPO_BETA, loss_type=["sigmoid"], max_length=SEQ_LEN,
                         precompute_ref_log_probs=False)
        trainer = recorded(GivenIds)(model=model, ref_model=reference, args=args, train_dataset=data,
                                     processing_class=AutoTokenizer.from_pretrained(fx.tokenizer_dir(root)))
        trainer.train()
    tokens = 2 * BATCH * SEQ_LEN
    return Result("trl", "dpo", size, trainer.clock.seconds(warmup), BATCH, tokens, (6.0 + 2.0) * n * tokens,
                  trainer.step_losses, first(trainer, **{k: k for k in ("logps/chosen", "logps/rejected")}))


RUNNERS = {"sft": sft, "reward": reward, "dpo": dpo}
