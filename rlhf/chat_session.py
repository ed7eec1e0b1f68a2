"""Multi-turn chat with a trained policy (`rlhf chat MODEL_DIR`).

The conversation is a list of messages; every turn is encoded whole with `rlhf.chat.encode_prompt`,
so a model with its own chat template is prompted through it and the project's models through the
HH layout, exactly as they were trained. Replies are sampled with `rlhf.generation.sampling_config`
(plain softmax(logits / T), top-p when < 1) with the checkpoint's own generation config hidden, as
everywhere in the pipeline: the first reply of a session seeded with `seed` is the one
`rlhf.generation.generate(..., seed=seed)` samples for the same prompt.

Tokens are streamed from inside `model.generate` (a streamer that it calls after every step, in the
calling thread), so a Ctrl-C during a reply interrupts `generate` itself: the reply stops where it
was and the chat goes on. When the conversation plus `max_new_tokens` no longer fits the model's
context, the oldest user/assistant exchanges are dropped (a system prompt stays) and a notice says
how many.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf.chat import Message, encode_prompt, uses_model_template
from rlhf.errors import UserError
from rlhf.generation import checkpoint_generation_config_hidden, sampling_config
from rlhf.train.models import has_tokenizer, load_causal_lm, load_tokenizer, max_positions

COMMANDS = {"/reset": "forget the conversation", "/exit": "end the chat (or Ctrl-D)", "/help": "list the commands"}


class ChatError(UserError):
    """A model directory or setting the chat cannot use; the message says which and why."""


def load_chat_model(path: str | Path, device: str = "cpu", trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of a local policy directory, the model in eval mode on `device`; code
    shipped in the directory runs only with `trust_remote_code` (`rlhf.train.remote_code`)."""
    path = Path(path)
    if not path.is_dir():
        raise ChatError(f"{path}: no such model directory")
    if not has_tokenizer(path):
        raise ChatError(f"{path}: no tokenizer here (tokenizer.json / tokenizer_config.json); "
                        "a policy directory holds its tokenizer beside the weights")
    if not (path / "config.json").is_file():
        raise ChatError(f"{path}: no config.json here; not a Hugging Face model directory")
    try:
        tokenizer = load_tokenizer(path, trust_remote_code)
        model = load_causal_lm(path, trust_remote_code)
    except (OSError, ValueError) as err:
        raise ChatError(f"{path}: cannot load the model: {err}") from err
    return model.to(device).eval(), tokenizer


class _Stream:
    """The streamer `model.generate` calls: keeps the reply's token ids and hands the new text of each
    step to `write`. The first `put` is the prompt; EOS ends the reply and is not shown."""

    def __init__(self, tokenizer: Any, write: Callable[[str], None]):
        self.tokenizer, self.write = tokenizer, write
        self.ids: list[int] = []
        self.shown = ""
        self._prompt_seen = False

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=False).strip()

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        eos = self.tokenizer.eos_token_id
        self.ids.extend(t for t in value.reshape(-1).tolist() if t != eos)
        self.show(self.text())

    def show(self, text: str, final: bool = False) -> None:
        """Write what `text` adds to what is on screen; a half-decoded character ("\\ufffd") waits
        for its next byte unless the reply is `final`."""
        if (text.endswith("\ufffd") and not final) or not text.startswith(self.shown) or text == self.shown:
            return
        self.write(text[len(self.shown):])
        self.shown = text  # after `write`: a Ctrl-C inside it leaves `shown` as what was shown

    def end(self) -> None:
        pass


@dataclass
class ChatSession:
    """One conversation with `model`. `reply(text, write)` adds a user turn, streams the sampled
    answer through `write` and returns it; `reset()` forgets everything but the system prompt."""

    model: Any
    tokenizer: Any
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 128
    system: str | None = None
    seed: int | None = None
    autocast: bool = False  # bf16 autocast around generate (CUDA)
    messages: list[Message] = field(default_factory=list)  # user/assistant turns, oldest first
    # the session's own RNG state (CPU, CUDA devices), so the global RNG never moves
    _rng: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.temperature < 0:
            raise ChatError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ChatError(f"--top-p must be in (0, 1], got {self.top_p}")
        self.context = max_positions(self.model.config)
        if not 0 < self.max_new_tokens < self.context:
            raise ChatError(f"--max-new-tokens={self.max_new_tokens} must be between 1 and {self.context - 1}: "
                            f"the model's context is {self.context} tokens, prompt included")

    @property
    def layout(self) -> str:
        return "the model's chat template" if uses_model_template(self.tokenizer) else "the HH layout"

    def conversation(self) -> list[Message]:
        """The messages the next prompt is made of: the system prompt (if any), then the turns."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages

    def prompt_ids(self) -> list[int]:
        return encode_prompt(self.tokenizer, self.conversation())

    def reset(self) -> None:
        self.messages = []

    def fit_context(self) -> int:
        """Drop the oldest exchanges until the prompt leaves room for `max_new_tokens`; returns how many
        messages went. The newest user turn always stays (`reply` refuses one that cannot fit)."""
        budget = self.context - self.max_new_tokens
        dropped = 0
        while len(self.prompt_ids()) > budget and len(self.messages) > 1:
            cut = 2 if len(self.messages) > 2 else 1  # a user turn and its answer, so turns still alternate
            self.messages = self.messages[cut:]
            dropped += cut
        return dropped

    def reply(self, text: str, write: Callable[[str], None], notice: Callable[[str], None] | None = None
              ) -> str | None:
        """Answer the user turn `text`: the reply is streamed through `write` and kept in the
        conversation (as far as it got when interrupted by Ctrl-C). `notice` gets what the session
        did on its own (dropped turns, an interrupted reply). None: `text` alone does not fit the
        context beside `max_new_tokens`, so it was refused (a notice says so) and nothing changed."""
        notice = notice or write
        turn = {"role": "user", "content": text}
        alone = len(encode_prompt(self.tokenizer, self.conversation()[:1 if self.system else 0] + [turn]))
        budget = self.context - self.max_new_tokens
        if alone > budget:  # refused before any history is dropped for it
            notice(f"[this message makes a {alone}-token prompt; {budget} tokens fit beside "
                   f"--max-new-tokens={self.max_new_tokens}; shorten it or lower --max-new-tokens]\n")
            return None
        self.messages.append(turn)
        dropped = self.fit_context()
        if dropped:
            notice(f"[dropped the oldest {dropped} message{'s' * (dropped > 1)} to fit the model's "
                   f"{self.context}-token context]\n")
        ids = self.prompt_ids()
        stream = _Stream(self.tokenizer, write)
        try:
            self._generate(ids, stream)
            stream.show(stream.text(), final=True)
            answer = stream.text()
        except KeyboardInterrupt:
            notice("\n[reply stopped]\n")
            answer = stream.shown.strip()  # what was on screen
        self.messages.append({"role": "assistant", "content": answer})
        return answer

    @torch.no_grad()
    def _generate(self, ids: list[int], stream: _Stream) -> None:
        device = next(self.model.parameters()).device
        devices = [device.index or 0] if device.type == "cuda" else []
        gen_cfg = sampling_config(self.tokenizer, self.max_new_tokens, self.temperature, self.top_p)
        input_ids = torch.tensor([ids], device=device)  # (1, P)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else nullcontext()
        with torch.random.fork_rng(devices=devices, enabled=self.seed is not None), \
                checkpoint_generation_config_hidden(self.model), amp:
            if self.seed is not None:
                self._restore_rng(devices)
            try:
                self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    generation_config=gen_cfg, streamer=stream)
            finally:
                if self.seed is not None:  # an interrupted reply still moves the session's RNG on
                    self._rng = (torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices])

    def _restore_rng(self, devices: list[int]) -> None:
        if self._rng is None:
            torch.manual_seed(self.seed)
            return
        cpu, cuda = self._rng
        torch.set_rng_state(cpu)
        for d, state in zip(devices, cuda):
            torch.cuda.set_rng_state(state, d)


def run_chat(session: ChatSession, read: Callable[[str], str], write: Callable[[str], None]) -> int:
    """The chat loop: `read(prompt)` gives the next line (EOFError or KeyboardInterrupt there ends the
    chat), `write` prints. Returns the number of replies."""
    write(f"Chatting in {session.layout}, context {session.context} tokens"
          f"{', system prompt set' if session.system else ''}. /reset forgets, /exit or Ctrl-D ends.\n")
    replies = 0
    while True:
        try:
            line = read("> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return replies
        if not line:
            continue
        if line == "/exit":
            return replies
        if line == "/reset":
            session.reset()
            write("[conversation cleared]\n")
            continue
        if line.startswith("/") and " " not in line:
            known = "; ".join(f"{c}: {h}" for c, h in COMMANDS.items())
            write(("" if line == "/help" else f"[unknown command {line}] ") + known + "\n")
            continue
        answered = session.reply(line, write) is not None
        write("\n")
        replies += answered
