"""Prompts as conversations (lists of chat messages) in the validation schemas and the overlap check."""

import pytest

from rlhf.paths import Paths
from rlhf.stages.validate import run_validate
from rlhf.config.validate import ValidateConfig
from rlhf.validation.validate import ValidationFailed, check_overlap, validate_file
from tests.data.util import write_jsonl

GOOD = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]},
        {"prompt": "A plain prompt."}]


def user(text):
    return {"role": "user", "content": text}


@pytest.mark.parametrize("prompt, message", [
    ([user("Hi"), {"role": "assistant", "content": "Hello"}],
     "not a valid conversation: the last message of a prompt must be a user turn, got 'assistant'"),
    ([{"role": "bot", "content": "x"}, user("Hi")],
     "not a valid conversation: message 1: role must be one of system, user, assistant, got a string ('bot')"),
    ([user("Hi"), {"role": "user", "content": 7}], "not a valid conversation: message 2: content must be text, got a number (7)"),
    ([user("Hi"), {"role": "user"}], "not a valid conversation: message 2: content must be text, got null"),
    ([user("Hi"), user("  ")], "message 2: empty or whitespace-only text"),
    ([user("a\x07b")], "message 1: control character U+0007 at character 2; only tab, newline and \\r\\n line ends "
                       "are allowed"),
    ([user("ok"), user("x" * 30)], "message 2: text is 30 characters long; the limit is 20 (max_chars)"),
    ([], "expected text, got an array ([])"),
])
def test_a_bad_conversation_is_named_by_row_field_and_message(tmp_path, prompt, message):
    path = write_jsonl(tmp_path / "p.jsonl", [*GOOD, {"prompt": prompt}])
    report = validate_file(path, "prompts", max_chars=20)
    assert [(p.row, p.field, p.message) for p in report.problems] == [(3, "prompt", message)]


def test_good_conversations_pass_and_the_limit_is_per_message(tmp_path):
    long_chat = [user("x" * 15), {"role": "assistant", "content": "y" * 15}, user("z" * 15)]
    path = write_jsonl(tmp_path / "p.jsonl", [*GOOD, {"prompt": long_chat}])
    assert validate_file(path, "prompts", max_chars=20).ok


def test_overlap_check_compares_conversations_with_plain_prompts(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": [user("What is rain?")]}, {"prompt": "Other?"}])
    heldout = write_jsonl(tmp_path / "held.jsonl", [{"prompt": "What is  rain?"}, {"prompt": [user("New?")]}])
    report = check_overlap({train: "prompts"}, {heldout: "prompts"})
    assert [(p.file, p.row, p.field) for p in report.problems] == [(str(heldout), 1, "prompt")]


def test_the_validate_stage_fails_on_a_conversation_in_both_splits(tmp_path):
    paths = Paths(tmp_path)
    chat = [{"role": "system", "content": "S"}, user("Same?")]
    files = {
        "sft_train": [{"prompt": chat, "response": "r"}], "sft_heldout": [{"prompt": "held", "response": "r"}],
        "pref_train": [{"prompt": "p", "chosen": "a", "rejected": "b"}],
        "pref_heldout": [{"prompt": chat, "chosen": "a", "rejected": "b"}],
        "rl_prompts": [{"prompt": "p"}], "eval_prompts": [{"prompt": "e", "set": "heldout"}],
    }
    paths.data.mkdir(parents=True)
    for name, rows in files.items():
        write_jsonl(getattr(paths, name), rows)
    with pytest.raises(ValidationFailed, match=r"pref_heldout.jsonl:1: prompt: prompt also in the train file"):
        run_validate(ValidateConfig(), paths)
