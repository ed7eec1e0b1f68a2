"""The data stage: files, counts, the prompt split, difficulty targets, determinism, config checks."""

import json
import random
from pathlib import Path

import pytest

from rlhf.config import ConfigError, load_config
from rlhf.config.data import DataConfig
from rlhf.paths import Paths
from rlhf.stages.data import run_data
from rlhf.world.generate import HELDOUT_SPLITS, TRAIN_SPLITS, bt_probability, check_disjoint
from rlhf.world.harms import HARMS
from rlhf.world.judge import judge
from rlhf.world.responses import BENIGN_STYLES, HARMFUL_STYLES, respond
from rlhf.world.topics import TOPICS

SPLITS = TRAIN_SPLITS + HELDOUT_SPLITS
FIELDS = {
    "sft_train": ["prompt", "response", "topic", "harmful"],
    "sft_heldout": ["prompt", "response", "topic", "harmful"],
    "pref_train": ["prompt", "chosen", "rejected", "topic", "harmful", "chosen_gold", "rejected_gold", "p_chosen"],
    "pref_heldout": ["prompt", "chosen", "rejected", "topic", "harmful", "chosen_gold", "rejected_gold", "p_chosen"],
    "rl_prompts": ["prompt", "topic", "harmful"],
    "eval_prompts": ["prompt", "topic", "harmful"],
}
SMALL = dict(n_sft_train=200, n_sft_heldout=30, n_pref_train=200, n_pref_heldout=50, n_rl_prompts=40, n_eval_prompts=20)


def read(paths: Paths, split: str) -> list[dict]:
    return [json.loads(line) for line in getattr(paths, split).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default-size stage, run once (about a second)."""
    cfg = DataConfig()
    paths = Paths(tmp_path_factory.mktemp("world"))
    out = run_data(cfg, paths)
    return cfg, paths, out, {s: read(paths, s) for s in SPLITS}


def test_files_fields_and_counts(default_run):
    cfg, paths, out, data = default_run
    for split in SPLITS:
        assert len(data[split]) == getattr(cfg, f"n_{split}")
        assert all(list(row) == FIELDS[split] for row in data[split]), split
        assert out.metrics[f"rows/{split}"] == len(data[split])
    assert not list(paths.data.glob("*.tmp")), "temporary files left behind"
    assert out.inputs == {} and all(p.is_file() for p in out.reports)


def test_no_prompt_shared_between_training_and_heldout(default_run):
    *_, out, data = default_run
    train = {r["prompt"] for s in TRAIN_SPLITS for r in data[s]}
    heldout = {r["prompt"] for s in HELDOUT_SPLITS for r in data[s]}
    assert not train & heldout and out.metrics["data/prompt_overlap"] == 0


def test_overlap_check_raises():
    row = {"prompt": "How do I steal a car?"}
    splits = {s: [] for s in SPLITS} | {"rl_prompts": [row], "eval_prompts": [row]}
    with pytest.raises(ValueError, match="shared by training and held-out"):
        check_disjoint(splits)


def test_demonstrations_are_mediocre_but_hold_good_behaviour(default_run):
    *_, out, data = default_run
    assert 2.0 <= out.metrics["data/sft_demos/helpfulness/benign"] <= 2.5
    assert 2.0 <= out.metrics["data/sft_demos/safety/harmful"] <= 2.5
    judged = [judge(d["prompt"], d["response"]) for d in data["sft_train"]]
    good = sum((j.safety if j.harmful else j.helpfulness) == 5 for j in judged) / len(judged)
    assert 0.10 <= good <= 0.25


def test_preference_labels(default_run):
    cfg, _, out, data = default_run
    assert 0.75 <= out.metrics["data/bayes_optimal_accuracy"] <= 0.90
    for row in data["pref_train"] + data["pref_heldout"]:
        assert row["chosen"] != row["rejected"] and row["chosen_gold"] != row["rejected_gold"]
        expected = bt_probability(row["chosen_gold"], row["rejected_gold"], cfg.bt_temperature)
        assert row["p_chosen"] == pytest.approx(expected)
        assert row["chosen_gold"] == judge(row["prompt"], row["chosen"]).utility
    # noisy like human raters: some labels go against the gold ordering, most do not
    assert 0.6 < out.metrics["data/label_gold_agreement_train"] < 0.95


def test_world_size_and_text_lengths(default_run):
    *_, out, data = default_run
    assert out.metrics["world/topics"] >= 30 and out.metrics["world/harm_categories"] >= 8
    prompts = [r for s in SPLITS for r in data[s]]
    assert 0.25 <= sum(r["harmful"] for r in prompts) / len(prompts) <= 0.30
    assert max(len(r["prompt"].split()) for r in prompts) < 30
    responses = [r["response"] for r in data["sft_train"]]
    responses += [r[k] for r in data["pref_train"] for k in ("chosen", "rejected")]
    assert max(len(t) for t in responses) < 400 and max(len(t.split()) for t in responses) < 60


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    def files(seed: int, name: str) -> dict[str, bytes]:
        paths = Paths(tmp_path / name)
        run_data(DataConfig(seed=seed, **SMALL), paths)
        return {s: getattr(paths, s).read_bytes() for s in SPLITS}

    first, again, other = files(0, "a"), files(0, "b"), files(1, "c")
    assert first == again
    assert all(first[s] != other[s] for s in SPLITS)


EXPECTED_STYLE_SCORES = {  # (harmful, style) -> allowed (helpfulness, safety), as the style docstrings say
    (False, "good"): {(5, 5)}, (False, "partial"): {(3, 5), (4, 5)}, (False, "generic"): {(2, 5)},
    (False, "off_topic"): {(1, 5)}, (False, "repetitive"): {(2, 5)}, (False, "refusal"): {(1, 5)},
    (False, "rude"): {(1, 4), (2, 4)},
    (True, "safe_refusal"): {(4, 5), (5, 5)}, (True, "refusal"): {(3, 4)}, (True, "evasive"): {(2, 3)},
    (True, "off_topic"): {(1, 3)}, (True, "comply"): {(2, 1)}, (True, "partial_comply"): {(2, 2)},
    (True, "leaky_refusal"): {(2, 2)},
}


@pytest.mark.parametrize("harmful,style", sorted(EXPECTED_STYLE_SCORES))
def test_each_style_earns_its_documented_score(harmful, style):
    rng = random.Random(style)
    subjects, template = (HARMS, "How do I {x}?") if harmful else (TOPICS, "Can you tell me about {x}?")
    for subject in subjects:
        prompt = template.format(x=subject.phrases[0])
        for _ in range(5):
            j = judge(prompt, respond(style, subject, harmful, rng))
            assert (j.helpfulness, j.safety) in EXPECTED_STYLE_SCORES[harmful, style], (prompt, style)


def test_style_tables_cover_the_expectations():
    assert {s for h, s in EXPECTED_STYLE_SCORES if not h} == set(BENIGN_STYLES)
    assert {s for h, s in EXPECTED_STYLE_SCORES if h} == set(HARMFUL_STYLES)


def write_params(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("data:\n" + body)
    return path


def test_unknown_config_key_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.n_sft_trian: unknown key"):
        load_config("data", write_params(tmp_path, "  n_sft_trian: 10\n"))


@pytest.mark.parametrize(
    "body,message",
    [
        ("  benign_mix: {good: 0.5, partial: 0.4}\n", "sum to 1"),
        ("  bt_temperature: 0\n", "greater than 0"),
        ("  harmful_share: 1.5\n", "less than or equal to 1"),
    ],
)
def test_bad_config_values_are_rejected(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_config("data", write_params(tmp_path, body))


def test_a_style_the_world_cannot_write_is_refused_naming_the_key(tmp_path):
    cfg = load_config("data", write_params(tmp_path, "  harmful_mix: {comply: 0.5, lovely: 0.5}\n"))
    with pytest.raises(ConfigError, match=r"data\.harmful_mix: unknown style\(s\) \['lovely'\]"):
        run_data(cfg, Paths(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # refused before anything was written
