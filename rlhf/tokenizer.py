"""The `tokenizer` stage: a byte-level BPE trained on the world's text.

Saved as a Hugging Face tokenizer directory with distinct pad, bos and eos tokens and the chat
template of `rlhf/chat.py`, so that every later stage loads it with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from rlhf.chat import CHAT_TEMPLATE, prompt_text, response_text
from rlhf.config.tokenizer import TokenizerConfig
from rlhf.files import atomic_dir, iter_jsonl
from rlhf.paths import Paths
from rlhf.stage import StageOutput

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """Train a byte-level BPE on `texts`; return a `PreTrainedTokenizerFast` (pad/bos/eos set)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD, BOS, EOS],  # ids 0, 1, 2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte stays encodable
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=None
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "right"  # trainers set left padding themselves when they sample
    return tok


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
