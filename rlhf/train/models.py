"""Loading and building the models every trainer starts from; never touches the Hub.

- `load_tokenizer(dir)`: any local Hugging Face tokenizer, with bos/eos/pad guaranteed.
- `load_reward_tokenizer(dir)`: the same, or an encoder's tokenizer ([CLS]/[SEP], no EOS) for a
  reward model that pools at [CLS] (rlhf/reward/model.py).
- `build_gpt2(tokenizer, ...)`: the embedded default, a GPT-2 from a config (random init, seeded).
- `load_causal_lm(dir)`: any local causal LM directory (GPT-2, Llama, SmolLM2 saved as safetensors).
- `with_activation_checkpointing(model, on)`: a trained model that recomputes its blocks' activations
  in the backward pass (the `activation_checkpointing` param of every trainer).
Everything loads with `local_files_only=True`: a typo in a path fails at once instead of
waiting on the network. All models come back with dropout off (Huang et al. 2024, "N+
implementation details of RLHF with PPO": dropout makes the PPO ratio and the reward noisy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlhf.errors import UserError
from rlhf.files import require_intact
from rlhf.train.last_mlp import recompute_reads
from rlhf.train.remote_code import allow, mark

# Config attributes that hold a dropout probability, across GPT-2, Llama, BERT, ... configs.
_DROPOUT_SUFFIXES = ("dropout", "pdrop", "dropout_prob", "dropout_rate")


def disable_dropout(target: Any) -> Any:
    """Set every dropout probability to 0: on a config (attributes ending in `*dropout*`/`*pdrop`)
    or on a model (its config and every `nn.Dropout` module). Returns `target`."""
    config = getattr(target, "config", target)
    for key, value in list(vars(config).items()):
        if isinstance(value, float) and key.endswith(_DROPOUT_SUFFIXES):
            setattr(config, key, 0.0)
    if isinstance(target, torch.nn.Module):
        for module in target.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return target


def has_tokenizer(path: str | Path) -> bool:
    """Whether a directory holds a saved tokenizer."""
    return (Path(path) / "tokenizer_config.json").is_file() or (Path(path) / "tokenizer.json").is_file()


def load_tokenizer(path: str | Path, trust: bool | None = None):
    """A local tokenizer with `bos`, `eos` and `pad` tokens (`trust`: `rlhf.train.remote_code`).

    The chat helpers need BOS and EOS. A tokenizer without BOS or PAD (e.g. a Llama-family one
    without pad) reuses EOS for them; our masks come from lengths, never from comparing ids with
    `pad_token_id`, so pad == eos cannot hide the EOS target (the classic SFT bug).
    """
    from transformers import AutoTokenizer

    code = allow(path, trust)
    return _with_chat_tokens(AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=code), path)


def load_reward_tokenizer(path: str | Path, trust: bool | None = None):
    """The tokenizer a reward model encodes its text with.

    A causal LM's tokenizer loads as in `load_tokenizer` (the reward head reads the EOS closing
    the response). An encoder's tokenizer with a [CLS] token and no EOS (BERT, all-MiniLM-L6-v2)
    loads as it is: the reward head reads [CLS], which the tokenizer's own post-processor puts
    first. Such a tokenizer without PAD pads with [SEP] (masks come from lengths, as above).
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=allow(path, trust))
    if tok.eos_token is None and tok.cls_token is not None:
        if tok.pad_token is None:
            tok.pad_token = tok.sep_token or tok.cls_token
        return tok
    return _with_chat_tokens(tok, path)


def _with_chat_tokens(tok: Any, path: str | Path) -> Any:
    if tok.eos_token is None:
        hint = " (an encoder tokenizer with [CLS] serves only a reward model)" if tok.cls_token else ""
        raise ValueError(f"{path}: the tokenizer has no eos token; the chat format needs one{hint}")
    if tok.bos_token is None:
        tok.bos_token = tok.eos_token
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_gpt2(tokenizer: Any, n_layer: int, n_head: int, n_embd: int, n_positions: int, seed: int):
    """A randomly initialised `GPT2LMHeadModel` sized by the arguments, vocabulary from `tokenizer`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # GPT-2's tanh-approximated GELU as one fused kernel: the same function as "gelu_new" (to
        # float rounding) at about a third of its time, forward and backward
        activation_function="gelu_pytorch_tanh",
    )
    disable_dropout(config)
    with torch.random.fork_rng(devices=[]):  # seeded init without moving the global RNG
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return disable_dropout(model)


def load_causal_lm(path: str | Path, trust: bool | None = None):
    """Any local Hugging Face causal LM directory, in float32, dropout off. `trust`: whether the
    code shipped in the directory may run (`rlhf.train.remote_code`; None: the pipeline's own dir)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlhf.train.runtime import quiet_transformers

    if not (Path(path) / "config.json").is_file():
        raise UserError(f"{path} is not a Hugging Face model directory (no config.json): "
                        "check the model path in the params, or run the stage that writes it")
    require_intact(path)
    code = allow(path, trust)
    config = disable_dropout(AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=code))
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(
            str(path), config=config, dtype=torch.float32, local_files_only=True, trust_remote_code=code
        )
    mark(model, code)
    return disable_dropout(model)


def with_activation_checkpointing(model: Any, enabled: bool) -> Any:
    """`model`, whose transformer blocks keep only their inputs in the forward pass and recompute the
    rest in the backward pass (activation checkpointing, Chen et al. 2016): a step then holds the
    activations of one block instead of every block's, for about one more forward per step. The
    loss and gradients are those of the plain step (`tests/unit/test_activation_checkpointing.py`).

    It applies to the transformers model inside `model`: a causal LM, the base of a peft model, or a
    `RewardModel`'s backbone (PPO's critic too), in training mode only (sampling and held-out passes
    do not change). The non-reentrant form of `torch.utils.checkpoint`, so that frozen inputs (LoRA
    on frozen weights) still pass gradients back. Returns `model`; `model` itself when not `enabled`."""
    if not enabled:
        return model
    from transformers import PreTrainedModel

    inner = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)  # the outermost one
    if inner is None or not inner.supports_gradient_checkpointing:
        name = type(inner if inner is not None else model).__name__
        raise UserError(f"{name} does not support activation checkpointing: set activation_checkpointing: false")
    kwargs = {"use_reentrant": False, "context_fn": recompute_reads}  # the last MLP's rows again (last_mlp.py)
    if hasattr(inner, "activation_checkpointing_enable"):  # transformers >= 5.x; the older name is deprecated there
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # pragma: no cover - older transformers
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def max_positions(config: Any, default: int = 1024) -> int:
    """The longest sequence a model accepts (`n_positions`, `max_position_embeddings`, ...)."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return default
