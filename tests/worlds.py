"""Test support: the toy worlds the trainer tests start from."""

from __future__ import annotations

from pathlib import Path

from rlhf.paths import Paths
from rlhf.reward import RewardModel
from rlhf.train import build_gpt2, load_tokenizer, save_model_dir
from rlhf.train.toy import make_toy_world, sft_rows, write_jsonl


class TinyVocab:
    """What `build_gpt2` reads of a tokenizer: a 64-token vocabulary (bos 0, eos = pad 1)."""

    bos_token_id, eos_token_id, pad_token_id = 0, 1, 1

    def __len__(self) -> int:
        return 64


def rl_world(root: Path) -> Paths:
    """The toy world (16 demonstrations, 24 pairs) with RL prompts, a tiny saved SFT policy and a
    reward model on it: what the reward, DPO and PPO stages read."""
    paths = make_toy_world(root, n_sft=16, n_pref=24)
    write_jsonl(paths.rl_prompts, sft_rows(16, seed=5))
    tok = load_tokenizer(paths.tokenizer)
    save_model_dir(paths.sft / "model", build_gpt2(tok, 2, 2, 32, 128, seed=0), tok)
    RewardModel.from_backbone(paths.sft / "model", tok, seed=0).save_pretrained(paths.reward / "model")
    return paths
