"""Preference pairs from Anthropic's HH-RLHF format: records with two full dialogues.

Each record holds `chosen` and `rejected` (and no `prompt`), each a whole dialogue
"\\n\\nHuman: ...\\n\\nAssistant: ...".
The prompt is the part before the last "\\n\\nAssistant:" (`rlhf.chat.split_hh_dialogue`), kept as it
is so that `rlhf.chat.prompt_text` renders it unchanged; the responses are what follows it.
`split_pair` reads one record; `rlhf.validation.formats` (format `implicit_standard`) calls it.

Two quirks of the published data are kept and reported as warnings rather than errors, so that the
shipped harmless-base test split validates (see `tests/data/test_hh.py` for what it contains):

* the two prefixes differ (5 of 2312 rows of harmless-base/test): one response ran on into a turn
  of its own ("... Human: ...\\n\\nAssistant: ..."), so one dialogue has extra turns. When the
  shorter prefix plus "\\n\\nAssistant:" starts the longer dialogue, the pair is read at that shared
  prefix and the extra turns stay in the longer response, which is what the raters compared. If
  neither dialogue starts with the other's prompt the two responses answer different prompts:
  that is an error.
* a response is empty (4 rows): the dialogue ends with an empty Assistant turn, and in those rows
  the raters preferred saying nothing (e.g. over giving out a home address). The empty reply is
  kept; `EMPTY_OK` tells the schema that these two columns may be empty here.
"""

from __future__ import annotations

from rlhf.chat import ASSISTANT, split_hh_dialogue
from rlhf.errors import UserError
from rlhf.validation.readers import describe
from rlhf.validation.report import plural

DIALOGUES = ("chosen", "rejected")
EMPTY_OK = DIALOGUES  # columns that may hold an empty response in this format
EMPTY_RESPONSE = "empty response (the dialogue ends with an empty Assistant turn); kept as an empty reply"


class PairError(UserError):
    """A record that cannot be read as a preference pair; `field` names the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def split_pair(chosen: object, rejected: object) -> tuple[tuple[str, str, str], list[tuple[str, str]]]:
    """((prompt, chosen response, rejected response), [(field, warning), ...]) of one record."""
    for name, value in zip(DIALOGUES, (chosen, rejected)):
        if not isinstance(value, str):
            got = describe(value)
            raise PairError(name, "missing or null" if got == "null" else f"expected a dialogue, got {got}")
        if ASSISTANT not in value:
            raise PairError(name, f"not an HH-RLHF dialogue: no {ASSISTANT!r} turn")
    prompt_c, resp_c = split_hh_dialogue(chosen)
    prompt_r, resp_r = split_hh_dialogue(rejected)
    notes: list[tuple[str, str]] = []
    if prompt_c != prompt_r:
        prompt, resp_c, resp_r, note = shared_prefix(chosen, rejected, prompt_c, prompt_r)
        notes.append(("prompt", note))
    else:
        prompt = prompt_c
    for name, response in zip(DIALOGUES, (resp_c, resp_r)):
        if not response:
            notes.append((name, EMPTY_RESPONSE))
    return (prompt, resp_c, resp_r), notes


def shared_prefix(chosen: str, rejected: str, prompt_c: str, prompt_r: str) -> tuple[str, str, str, str]:
    """Read a pair whose last-turn prefixes differ at the shorter prefix, if both dialogues share it.

    Returns (prompt, chosen response, rejected response, warning); raises PairError otherwise.
    """
    if len(prompt_r) < len(prompt_c):
        short, longer, name = prompt_r, chosen, "chosen"
    else:
        short, longer, name = prompt_c, rejected, "rejected"
    if not longer.startswith(short + ASSISTANT):
        raise PairError(
            "prompt",
            "the chosen and rejected dialogues differ before their last Assistant turn, "
            "so the two responses answer different prompts",
        )
    rest = longer[len(short) + len(ASSISTANT):]
    extra = rest.count(ASSISTANT)
    responses = {n: split_hh_dialogue(d)[1] for n, d in zip(DIALOGUES, (chosen, rejected))}
    responses[name] = rest.strip()
    note = (
        f"the two dialogues differ before their last Assistant turn: the {name} dialogue has "
        f"{plural(extra, 'more Assistant turn')}; read at the shared prompt, the extra turns stay in "
        f"the {name} response"
    )
    return short, responses["chosen"], responses["rejected"], note
