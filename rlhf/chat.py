"""The one chat format used by SFT, reward modelling, sampling and evaluation.

The format follows Anthropic's HH-RLHF dialogues so that the embedded world and real preference
data read the same way:

    <bos>\n\nHuman: {prompt}\n\nAssistant: {response}<eos>

`prompt_text` is everything up to and including "\n\nAssistant:"; the response is encoded on its own
(with its leading space) and followed by EOS. Encoding the two parts separately and concatenating the
ids means the prompt tokens seen in training are exactly the tokens the sampler is conditioned on.
"""

from __future__ import annotations

from typing import Any

HUMAN = "\n\nHuman: "
ASSISTANT = "\n\nAssistant:"

# Jinja chat template stored with the tokenizer; it renders the same strings as the helpers below.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '\n\nHuman: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '\n\nAssistant: ' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\n\nAssistant:' }}{% endif %}"
)


def prompt_text(prompt: str) -> str:
    """The conditioning text for a prompt, without the BOS token.

    A plain prompt becomes one Human turn; a prompt that is already an HH-RLHF dialogue prefix
    ("Human: ..." turns) is kept as it is.
    """
    text = prompt.strip()
    if text.startswith("Human:"):
        return f"\n\n{text}{ASSISTANT}"
    return f"{HUMAN}{text}{ASSISTANT}"


def response_text(response: str) -> str:
    """The response as it follows `prompt_text` (one leading space), without EOS."""
    return " " + response.strip()


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of BOS + prompt_text(prompt)."""
    return [tokenizer.bos_token_id] + tokenizer.encode(prompt_text(prompt), add_special_tokens=False)


def encode_response(tokenizer: Any, response: str) -> list[int]:
    """Token ids of response_text(response) + EOS."""
    return tokenizer.encode(response_text(response), add_special_tokens=False) + [tokenizer.eos_token_id]


def split_hh_dialogue(text: str) -> tuple[str, str]:
    """Split an HH-RLHF dialogue into (prompt part, last assistant response).

    The prompt part is everything before the last "\n\nAssistant:" (it may hold several turns);
    the response is the stripped text after it.
    """
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("no '\\n\\nAssistant:' turn in dialogue")
    return text[:cut], text[cut + len(ASSISTANT):].strip()
