"""The chat formats used by SFT, reward modelling, sampling and evaluation.

A prompt is either a string (one user turn; a string that starts with "Human:" is an HH-RLHF
dialogue prefix) or a conversation: a list of messages {"role": "system"|"user"|"assistant",
"content": str} ending with a user turn (`as_messages` turns either into the list). A response is a
string: the next assistant turn.

Two ways to turn them into tokens, chosen by the tokenizer:
- The model's own chat template (SmolLM2's ChatML, Llama's, Qwen's, ...) when its tokenizer has one:
  the prompt is `apply_chat_template(messages, add_generation_prompt=True)` and the response is what
  the template adds for the assistant turn, up to and including its EOS. A model trained this way is
  prompted by plain `apply_chat_template` users exactly as it was trained.
- Otherwise (the project's own tokenizer, or a model without a template) Anthropic's HH-RLHF layout,
  which the embedded world and the HH-RLHF data share:

      <bos>\n\nHuman: {prompt}\n\nAssistant: {response}<eos>

  `prompt_text` is everything up to and including "\n\nAssistant:"; the response is encoded on its
  own (with its leading space) and followed by EOS. A system message is a "System:" turn.
Either way the prompt and the response are encoded separately and their ids concatenated, so the
prompt tokens seen in training are exactly the tokens the sampler is conditioned on.
"""

from __future__ import annotations

import re
from typing import Any

from rlhf.errors import UserError

HUMAN = "\n\nHuman: "
ASSISTANT = "\n\nAssistant:"
SYSTEM = "\n\nSystem: "
ROLES = ("system", "user", "assistant")
Message = dict[str, str]
Prompt = str | list[Message]

# Jinja chat template stored with the project's tokenizer; it renders the same strings as the HH
# helpers below, so the saved model answers `apply_chat_template` prompts as it was trained.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '\n\nHuman: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '\n\nAssistant: ' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\n\nAssistant:' }}{% endif %}"
)
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")


class ChatFormatError(UserError):
    """A prompt or response that cannot be rendered; the message says what is wrong."""


# --- prompts as conversations ---
def hh_messages(text: str) -> list[Message]:
    """An HH-RLHF dialogue ("\\n\\nHuman: ...\\n\\nAssistant: ...") as messages, texts stripped.

    >>> hh_messages("\\n\\nHuman: hi\\n\\nAssistant: hello\\n\\nHuman: and?")
    [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'}, {'role': 'user', 'content': 'and?'}]
    """
    text = text.strip()
    marks = list(_HH_TURN.finditer(text))
    if not marks or marks[0].start() != 0 or marks[0].group(1) != "Human":
        raise ChatFormatError("not an HH-RLHF dialogue: it does not start with a 'Human:' turn")
    messages = []
    for mark, nxt in zip(marks, marks[1:] + [None]):
        end = nxt.start() if nxt else len(text)
        role = "user" if mark.group(1) == "Human" else "assistant"
        messages.append({"role": role, "content": text[mark.end():end].strip()})
    return messages


def as_messages(prompt: Prompt) -> list[Message]:
    """A prompt as a conversation that ends with a user turn (a checked copy of a list)."""
    if isinstance(prompt, str):
        text = prompt.strip()
        return hh_messages(text) if text.startswith("Human:") else [{"role": "user", "content": text}]
    if not isinstance(prompt, list) or not prompt:
        raise ChatFormatError(f"a prompt is a string or a non-empty list of messages, got {type(prompt).__name__}")
    messages = []
    for i, m in enumerate(prompt):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ChatFormatError(f"message {i + 1}: expected {{'role': one of {list(ROLES)}, 'content': text}}, "
                                  f"got {m!r:.80}")
        messages.append({"role": m["role"], "content": m["content"]})
    if messages[-1]["role"] != "user":
        raise ChatFormatError(f"the last message of a prompt must be a user turn, got {messages[-1]['role']!r}")
    return messages


# --- the HH layout ---
def prompt_text(prompt: Prompt) -> str:
    """The HH-layout conditioning text of a prompt, without the BOS token.

    A plain string becomes one Human turn; an HH-RLHF dialogue prefix ("Human: ..." turns) is kept as
    it is; a conversation is rendered turn by turn.
    """
    if isinstance(prompt, str):
        text = prompt.strip()
        if text.startswith("Human:"):
            return f"\n\n{text}{ASSISTANT}"
        return f"{HUMAN}{text}{ASSISTANT}"
    turns = {"system": SYSTEM, "user": HUMAN, "assistant": ASSISTANT + " "}
    return "".join(turns[m["role"]] + m["content"].strip() for m in as_messages(prompt)) + ASSISTANT


def response_text(response: str) -> str:
    """The response as it follows `prompt_text` (one leading space), without EOS."""
    return " " + response.strip()


def split_hh_dialogue(text: str) -> tuple[str, str]:
    """Split an HH-RLHF dialogue into (prompt part, last assistant response).

    The prompt part is everything before the last "\n\nAssistant:" (it may hold several turns);
    the response is the stripped text after it.
    """
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("no '\\n\\nAssistant:' turn in dialogue")
    return text[:cut], text[cut + len(ASSISTANT):].strip()


# --- the model's own template ---
def uses_model_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template other than the project's HH one."""
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and bool(template) and template != CHAT_TEMPLATE


def template_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """The model's own rendering of a prompt, ending where the assistant's reply starts."""
    return tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)


def template_response(tokenizer: Any, prompt: Prompt, response: str) -> str:
    """What the model's template adds after `template_prompt` for the assistant turn `response`, up to
    (not including) the EOS token that closes the turn."""
    messages = as_messages(prompt)
    head = template_prompt(tokenizer, messages)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response.strip()}],
                                         tokenize=False)
    if not full.startswith(head):
        raise ChatFormatError("the tokenizer's chat template renders a conversation differently with and "
                              "without its assistant turn, so a response cannot be cut from it")
    tail = full[len(head):]
    end = tail.rfind(tokenizer.eos_token)
    if end < 0:
        raise ChatFormatError(f"the tokenizer's chat template does not close an assistant turn with its eos "
                              f"token {tokenizer.eos_token!r}; set the tokenizer's eos to the end-of-turn token")
    return tail[:end]


# --- token ids ---
def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of the prompt: the template's rendering, or BOS + prompt_text(prompt)."""
    if uses_model_template(tokenizer):
        return tokenizer.encode(template_prompt(tokenizer, prompt), add_special_tokens=False)
    return [tokenizer.bos_token_id] + tokenizer.encode(prompt_text(prompt), add_special_tokens=False)


def encode_response(tokenizer: Any, prompt: Prompt, response: str) -> list[int]:
    """Token ids of the response to `prompt`, ending with EOS."""
    if uses_model_template(tokenizer):
        body = template_response(tokenizer, prompt, response)
    else:
        body = response_text(response)
    return tokenizer.encode(body, add_special_tokens=False) + [tokenizer.eos_token_id]
