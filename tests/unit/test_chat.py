"""The chat formats: prompts as conversations, the HH layout, and a model's own chat template."""

import pytest

from rlhf.chat import (
    CHAT_TEMPLATE,
    ChatFormatError,
    as_messages,
    encode_prompt,
    encode_response,
    hh_messages,
    prompt_text,
    uses_model_template,
)
from rlhf.train.models import load_tokenizer
from tests.chatml import save_tiny_chat_llama

CONVERSATION = [{"role": "user", "content": "How do I water a fern?"},
                {"role": "assistant", "content": "Weekly."},
                {"role": "user", "content": "And a cactus?"}]


def test_hh_dialogues_become_conversations():
    text = "\n\nHuman: How do I water a fern?\n\nAssistant: Weekly.\n\nHuman: And a cactus?"
    assert hh_messages(text) == CONVERSATION
    assert as_messages(text.strip()) == CONVERSATION
    assert as_messages("  Hi there ") == [{"role": "user", "content": "Hi there"}]
    with pytest.raises(ChatFormatError, match="Human"):
        hh_messages("Assistant: no human turn")


def test_conversations_are_checked():
    with pytest.raises(ChatFormatError, match="last message"):
        as_messages(CONVERSATION[:2])
    with pytest.raises(ChatFormatError, match="message 1"):
        as_messages([{"role": "robot", "content": "x"}])
    with pytest.raises(ChatFormatError, match="string or a non-empty list"):
        as_messages([])


def test_a_conversation_renders_as_its_hh_dialogue():
    """The HH layout of a message list equals the HH-RLHF dialogue prefix it came from."""
    dialogue = "Human: How do I water a fern?\n\nAssistant: Weekly.\n\nHuman: And a cactus?"
    assert prompt_text(CONVERSATION) == prompt_text(dialogue)
    assert prompt_text([{"role": "system", "content": "Be brief."}, CONVERSATION[0]]) == (
        "\n\nSystem: Be brief.\n\nHuman: How do I water a fern?\n\nAssistant:")


def test_the_projects_template_uses_the_hh_layout(tmp_path):
    from rlhf.train.toy import make_toy_world

    tok = load_tokenizer(make_toy_world(tmp_path).tokenizer)
    assert tok.chat_template == CHAT_TEMPLATE and not uses_model_template(tok)
    ids = encode_prompt(tok, "How do I water a fern?") + encode_response(tok, "How do I water a fern?", "Weekly.")
    assert tok.decode(ids) == "<|bos|>\n\nHuman: How do I water a fern?\n\nAssistant: Weekly.<|eos|>"


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    return load_tokenizer(save_tiny_chat_llama(tmp_path_factory.mktemp("llama")))


def test_a_models_own_template_frames_prompt_and_response(chatml):
    """Prompt ids + response ids are exactly the template's rendering of the whole conversation up
    to the EOS that closes the reply: what `apply_chat_template` users send is what was trained."""
    assert uses_model_template(chatml) and chatml.pad_token_id == chatml.eos_token_id
    p, r = encode_prompt(chatml, CONVERSATION), encode_response(chatml, CONVERSATION, " Less often. ")
    full = chatml.apply_chat_template(CONVERSATION + [{"role": "assistant", "content": "Less often."}], tokenize=False)
    assert chatml.decode(p + r) + "\n" == full
    assert chatml.decode(p).endswith("<|im_start|>assistant\n")
    assert r[-1] == chatml.eos_token_id and chatml.eos_token_id not in r[:-1]
    assert p == chatml.encode(chatml.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)


def test_a_template_that_does_not_end_turns_with_eos_is_refused(chatml):
    chatml = chatml.__class__.from_pretrained(chatml.name_or_path)
    chatml.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ChatFormatError, match="eos token"):
        encode_response(chatml, "Hi", "Hello")
