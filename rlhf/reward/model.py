"""`RewardModel`: a transformer backbone and a scalar head on one pooled token, saved as a standard
`AutoModelForSequenceClassification` directory.

Any local Hugging Face model with a sequence-classification class works as the backbone: a causal
LM directory (the SFT model, SmolLM2, Llama, ...: the transformer and a `score` head) or a BERT-like
encoder (all-MiniLM-L6-v2: the transformer, its [CLS] pooler and a `classifier` head). The head
follows Huang et al. 2024 ("N+ implementation details", reward-model details): weights ~
N(0, 1/(d_model+1)), zero bias where the architecture's head has one. Dropout is off.

Pooling follows the tokenizer the model scores with (both encode the chat text of rlhf/chat.py),
and reads the token that the architecture's own sequence classifier reads, so the saved directory
gives the same scores in plain transformers (and TRL):
- "last": a tokenizer with EOS (the project's, a causal LM's). Text = prompt + response + EOS in
  the chat format; the head reads the last real token that is not the pad token: the EOS closing
  the response when pad != eos (the project's tokenizer), the response's last token when pad == eos
  (SmolLM2, Llama without pad). A causal model has seen the whole dialogue at either.
- "cls": an encoder's own tokenizer with [CLS] and no EOS (BERT, all-MiniLM-L6-v2). Text = the
  tokenizer's own frame around prompt + response ([CLS] ... [SEP]); the head reads the encoder's
  pooler on [CLS], where such encoders were pre-trained to summarise the sequence.
Over-long texts lose prompt tokens from the front, never the pooled token. The pooling and the
tokenizer's origin are saved in `reward_config.json`, so a reloaded model (PPO, evaluation)
encodes and pools as the trained one did. Callers score text (`score`, `score_pairs`), never a
policy's token ids: the reward model's vocabulary need not be the policy's.

Normalised scores. After training, the stage measures the raw rewards of SFT demonstrations and
stores their mean and std in `reward_norm.json`; `score`, `score_pairs` and `compare` return
    score = (raw - mean) / std
so a typical demonstration scores about 0 and one std is 1 unit (N+ paper: "reward normalisation").
`forward` returns raw rewards (what the Bradley-Terry loss trains).

A saved model is a directory: `config.json` (architecture `<Model>ForSequenceClassification`, one
label, `reward_norm`) and `model.safetensors` with the head, the tokenizer, `reward_norm.json` and
`reward_config.json`.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhf.chat import Prompt, prompt_text, response_text, split_hh_dialogue
from rlhf.errors import UserError
from rlhf.files import require_intact, write_json
from rlhf.train.batching import encode_dialogue, model_attention_mask, pad, shares_prefixes
from rlhf.train.batching import position_ids as positions_of
from rlhf.train.last_mlp import read_at
from rlhf.train.models import (
    disable_dropout,
    has_tokenizer,
    load_reward_tokenizer,
    max_positions,
)
from rlhf.train.remote_code import allow, mark
from rlhf.train.runtime import quiet_transformers

NORM_FILE, CONFIG_FILE = "reward_norm.json", "reward_config.json"
HEAD_FILE = "reward_head.safetensors"  # the head alone, beside a LoRA adapter in a checkpoint (rlhf/train/lora.py)
POOLINGS = ("last", "cls")


def pooling_for(tokenizer: Any) -> str:
    """"cls" for an encoder tokenizer ([CLS], no EOS), else "last" (the EOS closing the response)."""
    return "cls" if tokenizer.eos_token is None and tokenizer.cls_token is not None else "last"


def special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's own post-processor puts before and after one text, e.g.
    ([CLS], [SEP]) for BERT: found by encoding a probe with and without special tokens."""
    body = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    for i in range(len(full) - len(body) + 1):
        if full[i: i + len(body)] == body:
            return full[:i], full[i + len(body):]
    raise ValueError(f"cannot locate the text inside the tokenizer's special tokens: {full}")


def encode_framed(tokenizer: Any, frame: tuple[list[int], list[int]], prompt: Prompt, response: str,
                  max_len: int) -> list[int]:
    """prefix + prompt_text + response_text + suffix (e.g. [CLS] ... [SEP]); over-long texts lose
    tokens from the front of the prompt, so [CLS] (the pooled token) and the response's end stay."""
    prefix, suffix = frame
    # verbose=False: the texts are cut to max_len just below, so the tokenizer's "longer than the
    # model's maximum" warning would only be noise
    body = (tokenizer.encode(prompt_text(prompt), add_special_tokens=False, verbose=False)
            + tokenizer.encode(response_text(response), add_special_tokens=False, verbose=False))
    keep = max_len - len(prefix) - len(suffix)
    assert keep > 0, f"max_seq_len {max_len} leaves no room besides the special tokens"
    return prefix + body[max(len(body) - keep, 0):] + suffix


def _load_sequence_classifier(path: str | Path, trust: bool | None = None):
    """`AutoModelForSequenceClassification` (one label) from any local backbone or reward-model dir,
    dropout off; the fresh head that a plain backbone gets is initialised without moving the global
    RNG (the caller initialises it again, seeded)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    require_intact(path)
    code = allow(path, trust)
    config = disable_dropout(AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=code))
    config.num_labels = 1
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # a backbone's missing head is expected, not worth a load report
    try:
        with quiet_transformers(), torch.random.fork_rng(devices=[]):
            model = AutoModelForSequenceClassification.from_pretrained(
                str(path), config=config, dtype=torch.float32, local_files_only=True, trust_remote_code=code)
    finally:
        logging.set_verbosity(verbosity)
    mark(model, code)
    return disable_dropout(model)


def split_classifier(model: Any) -> tuple[str, Any, torch.nn.Linear]:
    """(head name, transformer, scalar head) of a sequence classifier: a decoder's `score` read at its
    last token, or a BERT-like encoder's `classifier` on its [CLS] pooler. Other heads are refused."""
    for name in ("score", "classifier"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Linear) and head.out_features == 1:
            return name, model.base_model, head
    raise ValueError(f"{type(model).__name__}: a reward model needs a linear one-output head (`score` of a "
                     "decoder or `classifier` of a BERT-like encoder); this architecture has neither")


def saved_head(path: Path, name: str) -> dict[str, torch.Tensor]:
    """The head's tensors (`<name>.weight`, `<name>.bias`) from the safetensors files in `path`."""
    from safetensors import safe_open

    found = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            found |= {k[len(name) + 1:]: f.get_tensor(k) for k in f.keys() if k.startswith(name + ".")}
    if "weight" not in found:
        raise ValueError(f"{path}: no `{name}.weight` in its safetensors files: not a saved reward model")
    return found


class RewardModel(torch.nn.Module):
    def __init__(self, backbone: Any, head: torch.nn.Linear, tokenizer: Any, max_seq_len: int | None = None,
                 norm: dict[str, float] | None = None, pooling: str | None = None,
                 tokenizer_source: str = "backbone"):
        super().__init__()
        rows = backbone.get_input_embeddings().num_embeddings
        if len(tokenizer) > rows:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the backbone's embedding "
                             f"matrix has {rows} rows")
        self.backbone = backbone
        self.head = head
        self.tokenizer = tokenizer
        self.tokenizer_source = tokenizer_source  # "backbone" (its own) or "project"; saved, for the record
        self.max_seq_len = max_seq_len or max_positions(backbone.config)
        self.norm = dict(norm or {"mean": 0.0, "std": 1.0})
        self.pooling = pooling or pooling_for(tokenizer)
        assert self.pooling in POOLINGS, self.pooling
        # the saved config's pad id is what `AutoModelForSequenceClassification` pools by
        backbone.config.pad_token_id = tokenizer.pad_token_id
        if self.pooling == "cls":
            self._frame = special_frame(tokenizer)
            if not self._frame[0] or self._frame[0][0] != tokenizer.cls_token_id:
                raise ValueError(f"pooling at [CLS] needs a tokenizer that puts {tokenizer.cls_token} first; "
                                 f"it frames text as {self._frame}")
            if getattr(backbone, "pooler", None) is None:
                raise ValueError(f"{type(backbone).__name__}: pooling at [CLS] needs the encoder's pooler layer")
        elif getattr(backbone, "pooler", None) is not None:
            raise ValueError(f"{type(backbone).__name__} is an encoder: its sequence classifier pools at [CLS], "
                             "so it scores with its own tokenizer ([CLS] first), not one with an eos token")
        elif tokenizer.eos_token is None:
            raise ValueError("pooling at the last token needs a tokenizer with an eos token")
        # decoders and BERT-like encoders both take positions; count them over real tokens only
        params = inspect.signature(backbone.forward).parameters
        self._positions = "position_ids" in params
        self._no_cache = {"use_cache": False} if "use_cache" in params else {}  # a decoder's cache: of no use here

    # ---------- construction and persistence ----------
    @classmethod
    def from_backbone(cls, path: str | Path, tokenizer: Any = None, seed: int = 0,
                      max_seq_len: int | None = None, trust: bool | None = None) -> "RewardModel":
        """A new reward model on the backbone in `path`, with the tokenizer saved in `path` unless
        `tokenizer` (the project's) is given; pooling follows the tokenizer (module docstring).
        `trust`: whether code shipped in `path` may run (`rlhf.train.remote_code`)."""
        if tokenizer is None and not has_tokenizer(path):
            raise ValueError(f"{path}: no tokenizer saved with the backbone; pass one")
        source = "backbone" if tokenizer is None else "project"
        tokenizer = tokenizer if tokenizer is not None else load_reward_tokenizer(path, trust)
        _, backbone, head = split_classifier(_load_sequence_classifier(path, trust))
        model = cls(backbone, head, tokenizer, max_seq_len, tokenizer_source=source)
        d_model = model.head.in_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            torch.nn.init.normal_(model.head.weight, std=1.0 / math.sqrt(d_model + 1))  # N+ paper
        if model.head.bias is not None:
            torch.nn.init.zeros_(model.head.bias)
        return model

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "RewardModel":
        """Load a directory written by `save_pretrained` (no pickle: safetensors + JSON)."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise UserError(f"{path} is not a reward-model directory (no {CONFIG_FILE}): run the 'reward' "
                            "stage first, or give a folder it wrote")
        extra = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        norm = json.loads((path / NORM_FILE).read_text(encoding="utf-8")) if (path / NORM_FILE).is_file() else None
        name, backbone, head = split_classifier(_load_sequence_classifier(path))
        saved = saved_head(path, name)
        if "bias" in saved and head.bias is None:  # a critic's head (rlhf/stages/ppo.py) carries a bias
            head = torch.nn.Linear(head.in_features, 1)
        head.load_state_dict(saved)
        return cls(backbone, head, load_reward_tokenizer(path), extra["max_seq_len"], norm,
                   extra["pooling"], extra.get("tokenizer", "backbone"))

    def save_pretrained(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """A standard `AutoModelForSequenceClassification` directory (head included, so TRL and
        plain transformers load it as it is), with the tokenizer, `reward_norm.json` and
        `reward_config.json` (pooling, max_seq_len) beside it; the normalisation is also in the
        config (`reward_norm`). `state_dict`: this model's tensors to write instead of its own
        (`backbone.*`, `head.*`: a sharded model's, gathered whole)."""
        from transformers import AutoModelForSequenceClassification

        path = Path(path)
        config = copy.deepcopy(self.backbone.config)
        config.num_labels = 1
        config.reward_norm = dict(self.norm)
        with torch.device("meta"):
            shell = AutoModelForSequenceClassification.from_config(config)
        head_name = split_classifier(shell)[0]
        setattr(shell, head_name, self.head)  # the head as trained (a critic's keeps its bias)
        setattr(shell, shell.base_model_prefix, self.backbone)
        shell.config.architectures = [type(shell).__name__]
        if state_dict is None:
            shell.save_pretrained(path)
        else:  # the shell's names: <base_model_prefix>.* and <head>.*
            names = {"backbone": shell.base_model_prefix, "head": head_name}
            shell.save_pretrained(path, state_dict={f"{names[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v
                                                    for k, v in state_dict.items()})
        self.tokenizer.save_pretrained(path)
        write_json(path / NORM_FILE, self.norm)
        write_json(path / CONFIG_FILE, {"max_seq_len": self.max_seq_len, "pooling": self.pooling,
                                        "tokenizer": self.tokenizer_source})

    # ---------- forward ----------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, per_token: bool = False,
                position_ids: torch.Tensor | None = None, score_index: torch.Tensor | None = None) -> torch.Tensor:
        """Raw rewards of (B, T) ids and mask (left or right padded) -> (B,); the same numbers as
        the saved directory gives in `AutoModelForSequenceClassification`. `per_token=True`: the
        head at every position instead, (B, T) (PPO's critic reads V(s_t) there).

        Shared-prefix pairs (`rlhf.train.collate_shared_pairs`, when `shares_prefixes`) bring a
        (B, 1, T, T) boolean mask, their `position_ids` and `score_index` (B, K): the rewards of the
        K sequences of each row, (B, K)."""
        kwargs = {"input_ids": input_ids, "attention_mask": model_attention_mask(self.backbone, attention_mask),
                  **self._no_cache}
        if self._positions:  # (B, T), counted over real tokens: the same as unpadded
            kwargs["position_ids"] = position_ids if position_ids is not None else positions_of(attention_mask)
        if per_token:
            return self.head(self.backbone(**kwargs).last_hidden_state).squeeze(-1).float()  # (B, T)
        index = score_index if score_index is not None else self.pooled_index(input_ids, attention_mask)[:, None]
        rows = torch.arange(len(index), device=index.device)[:, None]  # (B, 1)
        # the last block's MLP at the read positions only (rlhf/train/last_mlp.py; an encoder's layers have
        # no `mlp`, and the [CLS] column its pooler reads is `index`)
        with read_at(self.backbone, index):
            pooled = self.backbone(**kwargs).last_hidden_state[rows, index]  # (B, K, H)
        if self.pooling == "cls":  # BERT-like: the pre-trained pooler on [CLS], as its classifier reads it
            pooler = self.backbone.pooler
            pooled = pooler.activation(pooler.dense(pooled))
        rewards = self.head(pooled).squeeze(-1).float()  # (B, K)
        return rewards if score_index is not None else rewards.squeeze(1)  # (B, K) or (B,)

    def shares_prefixes(self, max_len: int | None = None) -> bool:
        """Whether a chosen and a rejected sequence (each at most `max_len` tokens) can be scored in
        one row that holds their common prefix once: a decoder pooled at the last token, that takes
        position ids and reads a 4-D attention mask (`rlhf.train.batching.shares_prefixes`)."""
        return self.pooling == "last" and self._positions and shares_prefixes(self.backbone, max_len)

    def pooled_index(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and mask -> (B,) column the head reads: the first real token ([CLS]), or the last
        real token that is not the pad token (a decoder's sequence classifier reads that one: with
        pad == eos it is the response's last token, otherwise its EOS)."""
        mask = attention_mask.long()
        if self.pooling == "cls":
            return mask.argmax(dim=1)  # argmax returns the first maximum: the first real token
        mask = mask * (input_ids != self.tokenizer.pad_token_id).long()
        cols = torch.arange(mask.shape[1], device=mask.device)  # (T,)
        return (mask * cols).argmax(dim=1)

    # ---------- scoring API ----------
    def encode(self, prompt: Prompt, response: str) -> list[int]:
        """Token ids of one (prompt, response) in this model's own tokenizer, at most max_seq_len."""
        if self.pooling == "cls":
            return encode_framed(self.tokenizer, self._frame, prompt, response, self.max_seq_len)
        return encode_dialogue(self.tokenizer, prompt, response, self.max_seq_len)

    @torch.no_grad()
    def raw_scores(self, seqs: Sequence[Sequence[int]], batch_size: int = 32) -> torch.Tensor:
        """Raw rewards (N,) of token sequences, scored in length-sorted batches (less padding)."""
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out = torch.empty(len(seqs))
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            ids = pad([seqs[i] for i in idx], self.tokenizer.pad_token_id)  # (b, T)
            mask = pad([[1] * len(seqs[i]) for i in idx], 0)  # (b, T)
            out[idx] = self(ids.to(device), mask.to(device)).cpu()
        self.train(was_training)
        return out

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.norm["mean"]) / self.norm["std"]

    def score_pairs(self, prompts: Sequence[Prompt], responses: Sequence[str], batch_size: int = 32) -> list[float]:
        """Normalised scores of (prompt, response) pairs; prompts are plain user text. Texts are
        encoded with this model's tokenizer, so a policy with another vocabulary scores its
        decoded samples here (PPO and evaluation do)."""
        assert len(prompts) == len(responses), "one response per prompt"
        seqs = [self.encode(p, r) for p, r in zip(prompts, responses)]
        return self.normalise(self.raw_scores(seqs, batch_size)).tolist()

    def score(self, texts: Sequence[str], batch_size: int = 32) -> list[float]:
        """Normalised scores of full dialogues "\\n\\nHuman: ...\\n\\nAssistant: ..." (the last
        assistant turn is the response, everything before it the prompt)."""
        parts = [split_hh_dialogue(t) for t in texts]
        return self.score_pairs([p for p, _ in parts], [r for _, r in parts], batch_size)

    def compare(self, text_a: str, text_b: str) -> dict[str, Any]:
        """Which of two dialogues the model prefers. `confidence` is the Bradley-Terry probability
        of that preference, sigmoid(|raw_a - raw_b|), in the raw units the loss was trained in
        (equal to sigmoid(std * |difference|)); scores and difference are normalised."""
        score_a, score_b = self.score([text_a, text_b])
        diff = score_a - score_b
        return {
            "preference": "a" if diff >= 0 else "b",
            "confidence": float(torch.sigmoid(torch.tensor(abs(diff) * self.norm["std"]))),
            "score_a": score_a,
            "score_b": score_b,
            "difference": diff,
        }
