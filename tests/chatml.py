"""Test support: a tiny Llama saved with a ChatML tokenizer laid out as SmolLM2-Instruct's is
(bos "<|im_start|>", eos = pad = "<|im_end|>", a chat template that adds a default system prompt),
built from a config and a BPE trained here, never downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
# ChatML with a default system turn, like SmolLM2-Instruct's template (written for these tests)
CHATML_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_chatml_tokenizer(texts: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=[EOT, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts + ["system user assistant You are a helpful assistant."], trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=IM_START, eos_token=IM_END, pad_token=IM_END,
                                  unk_token=EOT)
    tok.chat_template = CHATML_TEMPLATE
    return tok


def save_tiny_chat_llama(path: Path, seed: int = 0, max_positions: int = 256) -> Path:
    """A 2-layer LlamaForCausalLM (hidden 32) with the ChatML tokenizer, saved in `path`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf.train.toy import pref_rows, sft_rows

    texts = [r["prompt"] + " " + r["response"] for r in sft_rows(64, seed=1)]
    texts += [r["rejected"] for r in pref_rows(32, seed=3)]
    tok = train_chatml_tokenizer(texts)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
