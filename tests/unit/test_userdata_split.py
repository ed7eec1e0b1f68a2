"""The held-out split of user data by distinct prompt (rlhf.userdata.split)."""

import pytest

from rlhf.userdata.split import build_splits, chosen_demos, heldout_keys, key

PAIRS = [{"prompt": f"Question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."} for i in range(100)]
# every prompt asked twice: a split by row would put one copy on each side
TWICE = PAIRS + [{**p, "chosen": p["chosen"] + " Also fine."} for p in PAIRS]


def keys(rows):
    return {key(r) for r in rows}


@pytest.mark.parametrize("fraction", [0.1, 0.15, 0.5])
def test_the_held_out_share_of_distinct_prompts_is_the_fraction(fraction):
    splits = build_splits(TWICE, None, None, {}, fraction, seed=0)
    data = splits.datasets
    assert len(keys(data["pref_heldout"])) == round(fraction * 100)
    assert splits.heldout_share == pytest.approx(round(fraction * 100) / 100)
    train = keys(data["sft_train"]) | keys(data["pref_train"]) | keys(data["rl_prompts"])
    heldout = keys(data["sft_heldout"]) | keys(data["pref_heldout"]) | keys(data["eval_prompts"])
    assert not train & heldout
    assert len(data["pref_train"]) + len(data["pref_heldout"]) == 200  # both copies of each prompt kept


def test_the_split_is_seeded():
    first = heldout_keys([[str(i) for i in range(50)]], 0.2, seed=0)
    assert first == heldout_keys([[str(i) for i in reversed(range(50))]], 0.2, seed=0)  # not order-dependent
    assert first != heldout_keys([[str(i) for i in range(50)]], 0.2, seed=1)
    assert len(first) == 10


def test_small_data_keeps_one_prompt_on_each_side():
    assert len(heldout_keys([["a", "b"]], 0.01, seed=0)) == 1
    assert len(heldout_keys([["a", "b"]], 0.99, seed=0)) == 1


def test_sft_prompts_not_among_the_pairs_get_their_own_share():
    demos = [{"prompt": f"Other {i}?", "response": f"Answer {i}."} for i in range(40)]
    data = build_splits(PAIRS, demos, None, {}, 0.25, seed=3).datasets
    assert len(data["sft_heldout"]) == 10 and len(data["pref_heldout"]) == 25
    assert sorted(r["prompt"] for r in data["sft_train"] + data["sft_heldout"]) == sorted(d["prompt"] for d in demos)


def test_sft_from_chosen_uses_each_prompt_and_chosen_response_once():
    demos = chosen_demos(PAIRS + PAIRS[:3])
    assert demos == [{"prompt": p["prompt"], "response": p["chosen"]} for p in PAIRS]
    data = build_splits(PAIRS, None, None, {}, 0.2, seed=0).datasets
    by_prompt = {p["prompt"]: p["chosen"] for p in PAIRS}
    assert all(by_prompt[d["prompt"]] == d["response"] for d in data["sft_train"] + data["sft_heldout"])
    assert keys(data["sft_heldout"]) == keys(data["pref_heldout"])


def test_eval_sets_are_held_out_and_named_rl_file_loses_held_out_prompts():
    advbench = [{"prompt": "Question 7?", "harmful": True}, {"prompt": "Write malware.", "harmful": True}]
    rl = [{"prompt": "Question 7?"}, {"prompt": "Question 8?"}, {"prompt": "Question 8?"}, {"prompt": "Fresh?"}]
    splits = build_splits(PAIRS, None, rl, {"advbench": advbench}, 0.1, seed=0)
    data = splits.datasets
    assert "Question 7?" in {r["prompt"] for r in data["pref_heldout"]}  # an eval prompt is never trained on
    assert "Question 7?" not in {r["prompt"] for r in data["rl_prompts"]}
    evals = data["eval_prompts"]
    assert evals[:2] == [{**a, "set": "advbench"} for a in advbench]
    assert {r["set"] for r in evals[2:]} == {"heldout"} and len(keys(evals)) == len(evals)
    assert splits.dropped["eval_repeats"] == 1  # "Question 7?" is in advbench and held out
    assert splits.dropped["rl_heldout"] == len(rl) - len(data["rl_prompts"]) - 1  # and one repeat
    assert not keys(data["rl_prompts"]) & keys(data["pref_heldout"])


def test_conversation_prompts_match_their_plain_form():
    conv = [{"prompt": [{"role": "user", "content": p["prompt"]}], "chosen": "x", "rejected": "y"} for p in PAIRS]
    heldout = heldout_keys([keys(PAIRS)], 0.2, seed=0)
    data = build_splits(conv, None, None, {}, 0.2, seed=0).datasets
    assert keys(data["pref_heldout"]) == heldout


def test_pairs_with_an_empty_response_are_dropped_and_too_little_data_is_an_error():
    pairs = PAIRS[:10] + [{"prompt": "Silent?", "chosen": "", "rejected": "Talk."}]
    splits = build_splits(pairs, None, None, {}, 0.2, seed=0)
    assert splits.dropped["empty_response"] == 1
    assert "Silent?" not in {r["prompt"] for rows in splits.datasets.values() for r in rows}
    with pytest.raises(ValueError, match="data.heldout_fraction: no rows left for .*pref_heldout"):
        build_splits(PAIRS[:1], None, None, {}, 0.2, seed=0)
