"""The files both sides start from, written once per benchmark run by the parent process:

    <root>/tokenizer/        byte-level BPE of VOCAB tokens (rlhf.tokenizer) with the chat format's specials
    <root>/<size>/policy/    a seeded GPT-2 (rlhf.train.build_gpt2): SFT model, DPO policy and reference,
                             PPO policy and reference
    <root>/<size>/reward/    that GPT-2 with a scalar head (RewardModel.save_pretrained): the reward
                             model trained by the reward step, PPO's reward model and critic
    <root>/data.json         the token sequences, in step order (step s uses items [s*BATCH, (s+1)*BATCH))

or, for a given checkpoint (`trl_compare.py --model DIR`, the size MODEL_SIZE), a root of its own with
the same layout: the checkpoint's tokenizer, the checkpoint itself as policy, and its body with a
scalar head as reward model (`write_model_fixtures`).

Model directories are safetensors: the project reads them with its own loaders, TRL with
`AutoModelFor*.from_pretrained`, so both sides start from one state dict. Token ids are random
(ids 0-2 are pad, bos and eos; a checkpoint's ids avoid its special tokens): throughput does not
depend on what the tokens say, and fixed lengths make every step the same work on both sides.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from benchmarks.trl_peer.settings import (
    BATCH,
    N_POSITIONS,
    PPO_PROMPT_LEN,
    PROMPT_LEN,
    RESPONSE_LEN,
    SEED,
    SIZES,
    VOCAB,
)


def tokenizer_dir(root: Path) -> Path:
    return root / "tokenizer"


def policy_dir(root: Path, size: str) -> Path:
    return root / size / "policy"


def reward_dir(root: Path, size: str) -> Path:
    return root / size / "reward"


def read_data(root: Path) -> dict[str, list[Any]]:
    """{"sft": rows, "pairs": pairs, "prompts": PPO prompts}, as `write_fixtures` wrote them."""
    return json.loads((root / "data.json").read_text(encoding="utf-8"))


def write_fixtures(root: Path, sizes: list[str], steps: int) -> None:
    """Tokenizer, models of `sizes` and data for `steps` optimizer steps (warm-up included) under `root`."""
    from rlhf.reward import RewardModel
    from rlhf.train import build_gpt2, save_model_dir
    from rlhf.train.runtime import quiet_transformers

    words = random_words(random.Random(SEED), 4000)
    tok = build_tokenizer(words)
    tok.save_pretrained(tokenizer_dir(root))
    for size in sizes:
        shape = SIZES[size]
        model = build_gpt2(tok, shape.n_layer, shape.n_head, shape.n_embd, N_POSITIONS, SEED)
        save_model_dir(policy_dir(root, size), model, tok)
        with quiet_transformers():
            RewardModel.from_backbone(policy_dir(root, size), tok, seed=SEED).save_pretrained(reward_dir(root, size))
    write_data(root, tok, words, steps, tok.bos_token_id)


def write_data(root: Path, tok: Any, words: list[str], steps: int, bos: int, allowed: torch.Tensor | None = None,
               prompt_len: int = PPO_PROMPT_LEN) -> None:
    """<root>/data.json: SFT rows, preference pairs (ids from `allowed`, default 3 to VOCAB - 1) and
    PPO prompts of `prompt_len` ids, for `steps` optimizer steps."""
    items = steps * BATCH
    sft_gen, pair_gen = torch.Generator().manual_seed(SEED), torch.Generator().manual_seed(SEED + 1)
    data = {  # each kind from its own stream: step s's batch does not depend on how many steps there are
        "sft": [sft_row(sft_gen, bos, tok.eos_token_id, allowed) for _ in range(items)],
        "pairs": [pair(pair_gen, bos, tok.eos_token_id, allowed) for _ in range(items)],
        "prompts": ppo_prompts(tok, words, items, prompt_len),
    }
    (root / "data.json").write_text(json.dumps(data), encoding="utf-8")


MODEL_SIZE = "model"  # the size name of a given checkpoint


def write_model_fixtures(root: Path, model_dir: Path, steps: int) -> None:
    """The fixtures of checkpoint `model_dir` (an HF causal-LM directory) under `root`: its
    tokenizer, its weights in fp32 as policy, its body with a seeded scalar head as reward model,
    and data for `steps` optimizer steps whose ids avoid its special tokens. PPO prompts are
    chat-formatted with its own template, PPO_PROMPT_LEN ids or, where the template alone is longer,
    the template plus 16."""
    from rlhf.chat import encode_prompt
    from rlhf.reward import RewardModel
    from rlhf.train import load_causal_lm, load_tokenizer, save_model_dir
    from rlhf.train.runtime import quiet_transformers

    tok = load_tokenizer(model_dir)
    tok.save_pretrained(tokenizer_dir(root))
    with quiet_transformers():
        save_model_dir(policy_dir(root, MODEL_SIZE), load_causal_lm(model_dir), tok)
        RewardModel.from_backbone(policy_dir(root, MODEL_SIZE), tok, seed=SEED).save_pretrained(
            reward_dir(root, MODEL_SIZE))
    specials = set(tok.all_special_ids)
    allowed = torch.tensor([i for i in range(min(VOCAB, len(tok))) if i not in specials])
    bos = tok.bos_token_id if tok.bos_token_id is not None else int(allowed[0])
    prompt_len = max(PPO_PROMPT_LEN, len(encode_prompt(tok, "")) + 16)
    write_data(root, tok, random_words(random.Random(SEED), 4000), steps, bos, allowed, prompt_len)


def random_words(rng: random.Random, n: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(n)]


def build_tokenizer(words: list[str]) -> Any:
    """The project's BPE (rlhf.tokenizer) trained on chat-formatted random words, to exactly VOCAB tokens."""
    from rlhf.chat import prompt_text, response_text
    from rlhf.tokenizer import train_tokenizer

    rng = random.Random(SEED + 1)
    texts = [prompt_text(" ".join(rng.choices(words, k=20))) + response_text(" ".join(rng.choices(words, k=20)))
             for _ in range(3000)]
    tok = train_tokenizer(texts, VOCAB, min_frequency=1)
    assert len(tok) == VOCAB, f"the tokenizer reached {len(tok)} tokens, not {VOCAB}"
    return tok


def random_ids(gen: torch.Generator, n: int, allowed: torch.Tensor | None = None) -> list[int]:
    """`n` ids from 3 to VOCAB - 1 (never pad, bos or eos), or from `allowed`."""
    if allowed is None:
        return torch.randint(3, VOCAB, (n,), generator=gen).tolist()
    return allowed[torch.randint(0, len(allowed), (n,), generator=gen)].tolist()


def sft_row(gen: torch.Generator, bos: int, eos: int, allowed: torch.Tensor | None = None
            ) -> dict[str, list[int]]:
    """SEQ_LEN ids: BOS + prompt, response + EOS; `loss_mask` 1 on the response and its EOS."""
    ids = [bos] + random_ids(gen, PROMPT_LEN - 1, allowed) + random_ids(gen, RESPONSE_LEN - 1, allowed) + [eos]
    return {"input_ids": ids, "loss_mask": [0] * PROMPT_LEN + [1] * RESPONSE_LEN}


def pair(gen: torch.Generator, bos: int, eos: int, allowed: torch.Tensor | None = None) -> dict[str, list[int]]:
    """One prompt (BOS first) and two responses (EOS last), each SEQ_LEN ids with the prompt."""
    return {"prompt": [bos] + random_ids(gen, PROMPT_LEN - 1, allowed),
            "chosen": random_ids(gen, RESPONSE_LEN - 1, allowed) + [eos],
            "rejected": random_ids(gen, RESPONSE_LEN - 1, allowed) + [eos]}


def ppo_prompts(tok: Any, words: list[str], n: int, length: int = PPO_PROMPT_LEN) -> list[dict[str, Any]]:
    """`n` prompts of random words whose chat-format encoding (rlhf.chat.encode_prompt: BOS + the
    Human/Assistant frame, or the tokenizer's own chat template) is exactly `length` ids:
    {"text": ..., "ids": ...}. The project samples from the text, TRL from the ids, which are the
    same tokens."""
    from rlhf.chat import encode_prompt

    rng = random.Random(SEED + 2)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        text, ids = "", []
        while len(ids) < length:
            text = f"{text} {rng.choice(words)}".strip()
            ids = encode_prompt(tok, text)
        if len(ids) == length:  # overshot: draw another
            out.append({"text": text, "ids": ids})
    return out
