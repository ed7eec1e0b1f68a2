"""Test support: a tiny BERT-like encoder saved with its own WordPiece tokenizer, the layout of a
sentence-transformers backbone such as all-MiniLM-L6-v2 ([CLS]/[SEP]/[PAD], no EOS or BOS),
built from a config and a tokenizer trained here, never downloaded."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch


def train_wordpiece(texts: Iterable[str], vocab_size: int = 200):
    """A lower-casing WordPiece tokenizer that frames one text as [CLS] ... [SEP], as BERT's does."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wp.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                            show_progress=False))
    cls, sep = wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]")
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return BertTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")


def save_tiny_bert(path: Path, vocab_size: int, tokenizer=None, seed: int = 0, max_positions: int = 64) -> Path:
    """A 1-layer `BertModel` (hidden 32) with `vocab_size` embedding rows in `path`, with
    `tokenizer` saved beside it when given. Returns `path`."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions,
                        pad_token_id=tokenizer.pad_token_id if tokenizer is not None else 0)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path
