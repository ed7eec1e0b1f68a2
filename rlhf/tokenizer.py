"""A byte-level BPE in the project's chat format (the `tokenizer` stage, rlhf/stages/tokenizer.py,
trains it on the world's text).

Saved as a Hugging Face tokenizer directory with distinct pad, bos and eos tokens and the chat
template of `rlhf/chat.py`, so that every later stage loads it with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterable

from rlhf.chat import CHAT_TEMPLATE

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
