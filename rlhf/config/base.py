"""Typed, strict stage configs loaded from `params.yaml`.

Every stage has one pydantic model named after its `params.yaml` section. Unknown keys, wrong types
and out-of-range values are errors that name the key (nanoGPT's strict configurator, with pydantic
doing the checking).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlhf.errors import UserError

try:
    from ruamel.yaml.error import YAMLError
except ImportError:  # pragma: no cover
    YAMLError = ValueError


def load_yaml(text: str) -> Any:
    """YAML 1.2, as DVC reads and writes params.yaml (`dvc exp run -S` included): `no` and `yes` are
    text, `1e-4` is a number. (PyYAML's YAML 1.1 would read an unquoted `no` as false.)"""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text)


class StageConfig(BaseModel):
    """Base of every stage config: strict, immutable, documented fields. Strict means no coercion:
    `packing: "yes"` or `max_steps: "1600"` is an error naming the key, not True or 1600."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


class ConfigError(UserError):
    """A params file that cannot configure a stage; the message names the key and the expectation."""


def read_params(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections at the top level")
    return data


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_validation_error(err: ValidationError, section: str, source: str) -> str:
    lines = [f"{source}: invalid section '{section}':"]
    for e in err.errors():
        key = ".".join(str(p) for p in (section, *e["loc"]))
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key")
        else:
            got = e.get("input")
            hint = ""
            if isinstance(got, str) and _is_number(got):
                hint = "; YAML reads a quoted number as text: write 12, not '12'"
            lines.append(f"  - {key}: {e['msg']} (got {got!r}{hint})")
    return "\n".join(lines)


def build_config(cls: type[StageConfig], section: str, data: dict[str, Any] | None, source: str):
    try:
        return cls.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, section, source)) from None


# Shared field types: the constraint and the doc live here once; a stage sets only its default.
Seed = Annotated[int, Field(ge=0, description="seed of initialisation, data order and sampling")]
MaxSteps = Annotated[int, Field(ge=1, description="optimizer steps (PPO: iterations of rollout + update)")]
LearningRate = Annotated[float, Field(gt=0, le=1, description="peak learning rate of AdamW")]
WeightDecay = Annotated[float, Field(ge=0, le=1, description="AdamW decoupled weight decay, matrices only")]
WarmupSteps = Annotated[int, Field(ge=0, description="linear warmup steps")]
ScheduleName = Annotated[Literal["cosine", "linear", "constant"], Field(description="learning-rate decay after warmup")]
MinLrRatio = Annotated[float, Field(ge=0, le=1, description="final learning rate / peak")]
CheckpointEvery = Annotated[int, Field(ge=1, description="save a resumable checkpoint every this many steps")]
LogEvery = Annotated[int, Field(ge=1, description="a history row every this many steps")]
AdamBeta2 = Annotated[float, Field(ge=0, lt=1, description="beta_2 of AdamW")]
AdamEps = Annotated[float, Field(gt=0, description="epsilon of AdamW")]
GroupByLength = Annotated[bool, Field(description="batch items of similar length together (less padding): each epoch's order is cut into groups of rlhf.train.batching.GROUP_BATCHES batches, each sorted by length, its batches in random order")]
Precision = Annotated[Literal["auto", "no", "bf16"], Field(description="'auto': bf16 autocast on CUDA, fp32 on CPU; 'bf16' also on a CPU with native bf16 matmul")]


class TrainConfig(StageConfig):
    """What every training stage (SFT, reward, PPO, DPO) shares: AdamW, the learning-rate schedule,
    gradient clipping, precision, checkpoints and logging. Trainers build their optimizer and
    schedule from it (`rlhf.train.optim.optimizer_from`, `scheduler_from`), so none can ignore a
    field. Stages override the defaults; params.yaml sets every value."""

    seed: Seed = 0
    learning_rate: LearningRate
    weight_decay: WeightDecay = 0.0
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="beta_1 of AdamW (Kingma & Ba 2015)")
    adam_beta2: AdamBeta2 = 0.95
    adam_eps: AdamEps = 1e-8
    warmup_steps: WarmupSteps = 0
    schedule: ScheduleName = "constant"
    min_lr_ratio: MinLrRatio = 0.0
    max_grad_norm: float = Field(1.0, gt=0, description="global gradient-norm clip, per model")
    mixed_precision: Precision = "auto"
    checkpoint_every: CheckpointEvery
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept")
    log_every: LogEvery = 1
    nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a NaN/inf loss, gradient norm (PPO: or score): 'stop' the stage with an error and no "
                            "model, or 'skip' that optimizer step (no update; the schedule advances), counted in "
                            "train/skipped_steps")
    fsdp: bool = Field(False, description="with several processes, shard parameters, gradients and AdamW state over "
                                          "them (torch FSDP2) instead of a full copy each (DDP): for models that do "
                                          "not fit one device; the run equals the DDP run within float tolerance")
    activation_checkpointing: bool = Field(
        False, description="recompute each transformer block's activations in the backward pass instead of keeping "
                           "them (TRL's gradient_checkpointing): one block's activations in memory instead of every "
                           "block's, for about one more forward per step; same loss and gradients (PPO: policy and "
                           "critic)")
    # LoRA (Hu et al. 2021): W x + (alpha / r) B A x with A, B of rank r trained and W frozen
    lora_r: int = Field(0, ge=0, description="LoRA rank r; 0 = full fine-tuning, no adapter")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scale alpha: the update is (alpha / r) B A")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the input of the LoRA branch")
    lora_target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description="modules that get an adapter: 'all-linear' (all but the LM head) or names")
    save_adapter: bool = Field(False, description="also write the LoRA adapter alone to <stage dir>/adapter/")

    @model_validator(mode="after")
    def _check_schedule(self) -> "TrainConfig":
        max_steps = getattr(self, "max_steps", None)  # None: DPO counts its steps from the epochs
        if max_steps is not None and self.warmup_steps > max_steps:
            raise ValueError("warmup_steps must not exceed max_steps")
        if self.save_adapter and self.lora_r == 0:
            raise ValueError("save_adapter needs an adapter: set lora_r > 0")
        if self.fsdp and self.lora_r:
            raise ValueError("fsdp with LoRA (lora_r > 0) is not supported: train the adapter with DDP (fsdp: false), "
                             "or fully fine-tune with fsdp (lora_r: 0)")
        if isinstance(self.lora_target_modules, list) and not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module (or be 'all-linear')")
        return self
