"""SFT on a tiny GPT-2 and the toy world, run as the sft task runs it: the loss falls, every
parameter moves, outputs load, and the gold-judged samples come from evaluation code after training."""

import json
import logging

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

import tasks.stages
from rlhf.config.sft import SFTConfig
from rlhf.paths import Paths
from rlhf.train import build_gpt2, load_tokenizer
from rlhf.train.toy import make_toy_world

TINY = dict(n_layer=1, n_head=2, n_embd=32, n_positions=64, max_seq_len=64, batch_size=8, micro_batch_size=4,
            max_steps=25, warmup_steps=2, learning_rate=3e-3, log_every=5, checkpoint_every=10,
            sample_count=3, sample_max_new_tokens=8, eval_examples=16)
GOLD = {"eval/helpfulness/benign", "eval/safety/harmful", "eval/reference/helpfulness/benign", "policy/eos_share"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(paths, the sft task's output, the metric names and tables `run_sft` itself returned)."""
    paths = make_toy_world(tmp_path_factory.mktemp("sft"))
    params = paths.root / "params.yaml"
    params.write_text(yaml.safe_dump({"sft": TINY}))
    training, library_function = {}, tasks.stages.library_function

    def run_and_record(cfg, paths):  # rlhf.stages.sft.run_sft, noting what it returned before the task adds to it
        out = library_function("sft")(cfg, paths)
        training.update(metrics=set(out.metrics), tables=dict(out.tables))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks.stages, "get_run_logger", lambda: logging.getLogger("test"))
        mp.setattr(tasks.stages, "library_function", lambda stage: run_and_record)
        _, out, _, _ = tasks.stages.compute.fn("sft", str(params), str(paths.root))
    return paths, out, training


def test_loss_falls_and_metrics_are_reported(trained):
    paths, out, _ = trained
    losses = [h["loss/sft"] for h in out.history]
    assert [h["step"] for h in out.history] == [5, 10, 15, 20, 25]
    assert losses[-1] < losses[0] - 0.5
    m = out.metrics
    assert m["eval/loss/sft"] < 6.0 and m["eval/perplexity/sft"] == pytest.approx(2.718281828 ** m["eval/loss/sft"])
    assert m["throughput/tokens_per_s"] > 0 and m["throughput/dialogues_per_s"] > 0
    assert GOLD <= set(m)
    written = json.loads(paths.metrics_file("sft").read_text())  # what users read in metrics/sft.json
    assert written == pytest.approx(m, nan_ok=True)  # NaN: the toy world has no harmful prompts


def test_training_reports_no_gold_score_and_the_task_adds_them(trained):
    _, out, training = trained
    assert "eval/loss/sft" in training["metrics"] and training["tables"] == {}
    assert not GOLD & training["metrics"], "run_sft reported gold-judged metrics"
    assert set(out.tables) == {"sft_samples.json"}


def test_samples_table_has_judged_rows(trained):
    _, out, _ = trained
    rows = out.tables["sft_samples.json"]
    assert len(rows) == 3
    assert all({"prompt", "response", "helpfulness", "safety"} <= set(r) for r in rows)
    assert all(1 <= r["helpfulness"] <= 5 and 1 <= r["safety"] <= 5 for r in rows)


def test_samples_are_those_of_the_saved_model_and_repeat(trained):
    from rlhf.stages.sft_samples import run_sft_samples

    paths, out, _ = trained
    again = run_sft_samples(SFTConfig(**TINY), paths)
    assert again.tables == out.tables
    assert again.metrics == pytest.approx({k: out.metrics[k] for k in again.metrics}, nan_ok=True)
    assert run_sft_samples(SFTConfig(**{**TINY, "sample_count": 0}), Paths(paths.root / "nowhere")).metrics == {}


def test_model_directory_loads_and_every_parameter_changed(trained):
    paths, out, _ = trained
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
