"""`RewardModel`: a transformer backbone and a scalar head on the last real token.

Any local Hugging Face model that returns `last_hidden_state` works as the backbone: a causal LM
directory (the SFT model; `AutoModel` keeps its transformer and drops the LM head) or an encoder
such as BERT. The head follows Huang et al. 2024 ("N+ implementation details", reward-model
details): a linear layer with weights ~ N(0, 1/(d_model+1)) and zero bias, reading the hidden
state of the last non-padding token, which is the EOS closing the response. Dropout is off.

Normalised scores. After training, the stage measures the raw rewards of SFT demonstrations and
stores their mean and std in `reward_norm.json`; `score`, `score_pairs` and `compare` return
    score = (raw - mean) / std
so a typical demonstration scores about 0 and one std is 1 unit (N+ paper: "reward normalisation").
`forward` returns raw rewards (what the Bradley-Terry loss trains).

A saved model is a directory: the backbone (`config.json`, `model.safetensors`), the head
(`reward_head.safetensors`), `reward_norm.json`, `reward_config.json` and the tokenizer.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhf.chat import split_hh_dialogue
from rlhf.train.batching import encode_dialogue, pad, position_ids
from rlhf.train.checkpoint import write_json
from rlhf.train.models import disable_dropout, load_tokenizer, max_positions
from rlhf.train.runtime import quiet_transformers

HEAD_FILE, NORM_FILE, CONFIG_FILE = "reward_head.safetensors", "reward_norm.json", "reward_config.json"


def _load_backbone(path: str | Path):
    from transformers import AutoConfig, AutoModel

    config = disable_dropout(AutoConfig.from_pretrained(str(path), local_files_only=True))
    with quiet_transformers():
        backbone = AutoModel.from_pretrained(str(path), config=config, dtype=torch.float32, local_files_only=True)
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None  # BERT's [CLS] pooler is unused: without it every parameter gets a gradient
    return disable_dropout(backbone)


class RewardModel(torch.nn.Module):
    def __init__(self, backbone: Any, tokenizer: Any, max_seq_len: int | None = None,
                 norm: dict[str, float] | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.head = torch.nn.Linear(backbone.config.hidden_size, 1)
        self.max_seq_len = max_seq_len or max_positions(backbone.config)
        self.norm = dict(norm or {"mean": 0.0, "std": 1.0})
        # decoders and BERT-like encoders both take positions; count them over real tokens only
        self._positions = "position_ids" in inspect.signature(backbone.forward).parameters

    # ---------- construction and persistence ----------
    @classmethod
    def from_backbone(cls, path: str | Path, tokenizer: Any = None, seed: int = 0,
                      max_seq_len: int | None = None) -> "RewardModel":
        """A new reward model on the backbone in `path` (tokenizer from `path` unless given)."""
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path)
        model = cls(_load_backbone(path), tokenizer, max_seq_len)
        d_model = model.head.in_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            torch.nn.init.normal_(model.head.weight, std=1.0 / math.sqrt(d_model + 1))  # N+ paper
        torch.nn.init.zeros_(model.head.bias)
        return model

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "RewardModel":
        """Load a directory written by `save_pretrained` (no pickle: safetensors + JSON)."""
        from safetensors.torch import load_file

        path = Path(path)
        extra = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        norm = json.loads((path / NORM_FILE).read_text(encoding="utf-8")) if (path / NORM_FILE).is_file() else None
        model = cls(_load_backbone(path), load_tokenizer(path), extra["max_seq_len"], norm)
        model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        return model

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        self.backbone.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(path / HEAD_FILE))
        write_json(path / NORM_FILE, self.norm)
        write_json(path / CONFIG_FILE, {"max_seq_len": self.max_seq_len})

    # ---------- forward ----------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw rewards of (B, T) ids and mask (left or right padded) -> (B,)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._positions:
            kwargs["position_ids"] = position_ids(attention_mask)  # (B, T), same as unpadded
        hidden = self.backbone(**kwargs).last_hidden_state  # (B, T, H)
        cols = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        last = (attention_mask.long() * cols).argmax(dim=1)  # (B,) index of the last real token
        pooled = hidden[torch.arange(len(last), device=last.device), last]  # (B, H)
        return self.head(pooled).squeeze(-1).float()  # (B,)

    # ---------- scoring API ----------
    def encode(self, prompt: str, response: str) -> list[int]:
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

    def score_pairs(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> list[float]:
        """Normalised scores of (prompt, response) pairs; prompts are plain user text."""
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
