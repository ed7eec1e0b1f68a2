"""LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") through `peft`
for every trainer: h = W x + (alpha / r) B A x, with A (r x d_in), B (d_out x r) trained and W frozen.
B starts at zero, so an adapted model starts exactly at its base.

- `with_lora(model, cfg, resume)`: a causal LM with an adapter (a new one, or the one a checkpoint
  saved); the model as it is when `cfg.lora_r == 0`.
- `with_reward_lora(rm, cfg, resume)`: the same on a `RewardModel`'s backbone; the scalar head sits
  outside the backbone (`rm.head`) and stays fully trainable, as `modules_to_save` would keep it.
- `AdapterOff(model)`: the base under the adapter, called with the adapter disabled: DPO's and PPO's
  reference policy pi_ref without a second copy of the weights in memory.
- `merged(model)`: a plain transformers model (or `RewardModel`) with B A folded into W, for the
  stage's output directory; `save_adapter(model, dir)`: the adapter alone; `saved_form(model)`:
  what a checkpoint saves (the adapter, and a reward model's head).

Checkpoints of an adapted model hold only the adapter (and a reward model's head): the base is the
stage's input, which the checkpoint folder's digest already pins, so resuming rebuilds the base and
loads the adapter back (`with_lora(base, cfg, resume=ckpt)`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from rlhf.files import atomic_dir
from rlhf.train.runtime import quiet_transformers

ADAPTER_DIR = "adapter"  # <stage dir>/adapter/ with `save_adapter: true`
ADAPTER_CONFIG = "adapter_config.json"


def lora_enabled(cfg: Any) -> bool:
    return cfg.lora_r > 0


def has_adapter(path: str | Path | None) -> bool:
    """Whether a directory holds a peft adapter (a checkpoint of an adapted model)."""
    return path is not None and (Path(path) / ADAPTER_CONFIG).is_file()


def lora_config(cfg: Any, task_type: str | None):
    from peft import LoraConfig

    targets = cfg.lora_target_modules
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets if isinstance(targets, str) else list(targets),
                      bias="none", task_type=task_type)


def _adapt(model: Any, cfg: Any, resume: str | Path | None, task_type: str | None):
    """`model` frozen, with a LoRA adapter: loaded from `resume` when it holds one, else new."""
    import warnings

    from peft import PeftModel, get_peft_model

    with warnings.catch_warnings():  # GPT-2's Conv1D layers: peft sets fan_in_fan_out itself and says so
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        if has_adapter(resume):
            return PeftModel.from_pretrained(model, str(resume), is_trainable=True)
        return get_peft_model(model, lora_config(cfg, task_type))


def with_lora(model: Any, cfg: Any, resume: str | Path | None = None) -> Any:
    """A causal LM with a LoRA adapter (`cfg.lora_*`), or `model` itself when `cfg.lora_r == 0`."""
    if not lora_enabled(cfg):
        return model
    return _adapt(model, cfg, resume, "CAUSAL_LM")


def with_reward_lora(rm: Any, cfg: Any, resume: str | Path | None = None, head_file: str | None = None) -> Any:
    """`rm` (a `RewardModel`) with a LoRA adapter on its backbone; its head stays trainable and,
    when resuming from a checkpoint with an adapter, is read back from `resume / head_file`.
    `rm` itself when `cfg.lora_r == 0`."""
    if not lora_enabled(cfg):
        return rm
    from safetensors.torch import load_file

    rm.backbone = _adapt(rm.backbone, cfg, resume, None)  # positions: RewardModel decided at __init__
    rm.head.requires_grad_(True)
    if has_adapter(resume):
        assert head_file is not None, "resuming a reward model's adapter needs its head file"
        rm.head.load_state_dict(load_file(str(Path(resume) / head_file)))
    return rm


def _peft_part(model: Any) -> Any:
    """The peft model inside `model` (itself, or a reward model's backbone), or None."""
    from peft import PeftModel

    for part in (model, getattr(model, "backbone", None)):
        if isinstance(part, PeftModel):
            return part
    return None


class AdapterOff:
    """pi_ref as the base of an adapted policy: calls `model` inside `model.disable_adapter()`,
    without gradients. Not an `nn.Module`, so that `.requires_grad_(False)`, `.to(...)` or an
    optimizer over it can never reach the policy's own weights."""

    def __init__(self, model: Any) -> None:
        self._model = model

    @property
    def config(self) -> Any:
        return self._model.config

    def parameters(self):
        return self._model.parameters()

    def modules(self):  # where rlhf/train/last_mlp.py finds the last block's MLP
        return self._model.modules()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad(), self._model.disable_adapter():
            return self._model(*args, **kwargs)


def merged(model: Any) -> Any:
    """A copy of `model` with every adapter folded into its base weights (W + (alpha / r) B A), as
    a plain transformers model (or a `RewardModel` on one); `model` itself when it has no adapter."""
    part = _peft_part(model)
    if part is None:
        return model
    if part is model:
        return copy.deepcopy(model).merge_and_unload()
    out = copy.deepcopy(model)
    out.backbone = out.backbone.merge_and_unload()
    return out


class RewardAdapter(torch.nn.Module):
    """What is saved of a reward model (or critic) whose backbone has a LoRA adapter: the adapter
    (peft's `adapter_config.json` + `adapter_model.safetensors`), the head in `head_file` and the
    tokenizer; `with_reward_lora(rm, cfg, resume=<that dir>, head_file=...)` reads it back.
    (`RewardModel.save_pretrained` writes a full sequence classifier, which a LoRA checkpoint
    must not be: resuming puts the adapter back on the untouched base.)"""

    def __init__(self, rm: Any, head_file: str) -> None:
        super().__init__()
        self.rm, self.head_file = rm, head_file

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        self.rm.backbone.save_pretrained(path)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.rm.head.state_dict().items()},
                  str(Path(path) / self.head_file))
        self.rm.tokenizer.save_pretrained(path)


def saved_form(model: Any, head_file: str | None = None) -> Any:
    """What a checkpoint should `save_pretrained`: a peft causal LM saves its adapter itself; a
    reward model with an adapter on its backbone goes through `RewardAdapter`; others as they are."""
    part = _peft_part(model)
    if part is None or part is model:
        return model
    assert head_file is not None, "a reward model's adapter is saved with its head: pass head_file"
    return RewardAdapter(model, head_file)


def save_adapter(model: Any, target: str | Path, head_file: str | None = None) -> Path:
    """Write the adapter of `model` alone (a reward model's: with its head and tokenizer) to
    `target`, atomically."""
    assert _peft_part(model) is not None, "save_adapter needs a model with a LoRA adapter"
    with atomic_dir(target) as tmp, quiet_transformers():
        saved_form(model, head_file).save_pretrained(tmp)
    return Path(target)


def finish_outputs(run: Any, out_dir: Path, model: Any, cfg: Any, tokenizer: Any = None,
                   head_file: str | None = None) -> None:
    """The stage's final save: `run.finish` with the merged model (the same layout as a full
    fine-tune, loadable by plain transformers) and, with `save_adapter`, the adapter beside it in
    `<stage dir>/adapter/` (a reward model's with its head in `head_file`)."""
    model = run.accelerator.unwrap_model(model)
    if cfg.save_adapter and run.accelerator.is_main_process:
        save_adapter(model, Path(out_dir).parent / ADAPTER_DIR, head_file)
    run.finish(out_dir, merged(model), tokenizer)


def transformers_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper, whose layers carry the adapter (a call is the
    adapted model's): what `generate` gets, so that the model's own `generation_config` is the one
    `rlhf.generation` hides during sampling; `model` itself without an adapter."""
    part = _peft_part(model)
    return part.get_base_model() if part is model else model
