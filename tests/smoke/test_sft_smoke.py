"""SFT on a tiny GPT-2 and the toy world: the loss falls, every parameter moves, outputs load."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf.config.sft import SFTConfig
from rlhf.sft import run_sft
from rlhf.train import build_gpt2, load_tokenizer
from rlhf.train.toy import make_toy_world

TINY = dict(n_layer=1, n_head=2, n_embd=32, n_positions=64, max_seq_len=64, batch_size=8, micro_batch_size=4,
            max_steps=25, warmup_steps=2, learning_rate=3e-3, log_every=5, checkpoint_every=10,
            sample_count=3, sample_max_new_tokens=8, eval_examples=16)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    paths = make_toy_world(tmp_path_factory.mktemp("sft"))
    return paths, run_sft(SFTConfig(**TINY), paths)


def test_loss_falls_and_metrics_are_reported(trained):
    _, out = trained
    losses = [h["loss/sft"] for h in out.history]
    assert [h["step"] for h in out.history] == [5, 10, 15, 20, 25]
    assert losses[-1] < losses[0] - 0.5
    m = out.metrics
    assert m["eval/loss/sft"] < 6.0 and m["eval/perplexity/sft"] == pytest.approx(2.718281828 ** m["eval/loss/sft"])
    assert m["throughput/tokens_per_s"] > 0 and m["throughput/dialogues_per_s"] > 0
    assert {"eval/helpfulness/benign", "eval/safety/harmful", "eval/reference/helpfulness/benign"} <= set(m)


def test_samples_table_has_judged_rows(trained):
    _, out = trained
    rows = out.tables["sft_samples.json"]
    assert len(rows) == 3
    assert all({"prompt", "response", "helpfulness", "safety"} <= set(r) for r in rows)
    assert all(1 <= r["helpfulness"] <= 5 and 1 <= r["safety"] <= 5 for r in rows)


def test_model_directory_loads_and_every_parameter_changed(trained):
    paths, out = trained
    model_dir = paths.sft / "model"
    assert out.models == {"rlhf-sft": model_dir}
    cfg = json.loads((model_dir / "stage_config.json").read_text())
    assert cfg == SFTConfig(**TINY).model_dump(mode="json")
    tok = load_tokenizer(model_dir)
    trained_model = AutoModelForCausalLM.from_pretrained(model_dir)
    init = build_gpt2(tok, TINY["n_layer"], TINY["n_head"], TINY["n_embd"], TINY["n_positions"], seed=0)
    after = dict(trained_model.named_parameters())
    for name, p in init.named_parameters():
        assert not torch.equal(p, after[name]), f"{name} did not change"
    assert trained_model.config.resid_pdrop == 0 and trained_model.config.attn_pdrop == 0
