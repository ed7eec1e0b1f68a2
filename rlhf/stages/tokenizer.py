"""The `tokenizer` stage: the project's BPE (`rlhf.tokenizer`) trained on the training splits only,
checked to round-trip the chat format, saved atomically, and measured on held-out text."""

from __future__ import annotations

from collections.abc import Iterator

from rlhf.chat import prompt_text, response_text
from rlhf.config.tokenizer import TokenizerConfig
from rlhf.files import atomic_dir, iter_jsonl
from rlhf.paths import Paths
from rlhf.stage import StageOutput
from rlhf.tokenizer import train_tokenizer


def corpus(paths: Paths) -> Iterator[str]:
    """Every prompt and response of the training splits, formatted as the models will see them."""
    for row in iter_jsonl(paths.sft_train):
        yield prompt_text(row["prompt"]) + response_text(row["response"])
    for row in iter_jsonl(paths.pref_train):
        yield prompt_text(row["prompt"]) + response_text(row["chosen"])
        yield response_text(row["rejected"])
    for row in iter_jsonl(paths.rl_prompts):
        yield prompt_text(row["prompt"])


def run_tokenizer(cfg: TokenizerConfig, paths: Paths) -> StageOutput:
    # 1. train on the training splits only (held-out text stays unseen)
    tok = train_tokenizer(corpus(paths), cfg.vocab_size, cfg.min_frequency)
    # 2. check the special tokens are distinct and round-trip the chat format
    ids = {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}
    assert len(ids) == 3, f"special tokens must be distinct, got {ids}"
    sample = next(iter_jsonl(paths.sft_train))
    text = prompt_text(sample["prompt"]) + response_text(sample["response"])
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text, "BPE does not round-trip"
    # 3. save atomically: write a temporary directory beside the target, then swap it in
    with atomic_dir(paths.tokenizer) as tmp:
        tok.save_pretrained(tmp)
    # 4. measure how compactly it encodes the demonstrations
    n_chars = n_tokens = 0
    for row in iter_jsonl(paths.sft_heldout):
        t = prompt_text(row["prompt"]) + response_text(row["response"])
        n_chars += len(t)
        n_tokens += len(tok.encode(t, add_special_tokens=False))
    metrics = {
        "tokenizer/vocab_size": float(len(tok)),
        "tokenizer/chars_per_token_heldout": n_chars / max(n_tokens, 1),
    }
    return StageOutput(
        metrics=metrics,
        inputs={"sft_train": paths.sft_train, "pref_train": paths.pref_train, "rl_prompts": paths.rl_prompts},
    )
