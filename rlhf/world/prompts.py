"""Every prompt the world can ask: prefix x template(phrase) x suffix, for each topic and category.

The universe is enumerated once, in a fixed order, so that a seeded shuffle splits it by prompt
string into training and held-out pools that can never share a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from rlhf.world import lexicon as lx
from rlhf.world.harms import HARMS
from rlhf.world.topics import TOPICS


@dataclass(frozen=True)
class PromptRecord:
    prompt: str
    topic: str  # topic name, or harm category name when harmful
    harmful: bool


def _surface_forms(templates: tuple[str, ...], phrases: tuple[str, ...]) -> list[str]:
    return [
        f"{pre}{tpl.format(x=phrase)}{suf}"
        for pre, tpl, phrase, suf in product(lx.PREFIXES, templates, phrases, lx.SUFFIXES)
    ]


def all_prompts() -> list[PromptRecord]:
    """The whole prompt universe, benign topics first, in a fixed order without duplicates."""
    records = [
        PromptRecord(p, t.name, False) for t in TOPICS for p in _surface_forms(lx.TEMPLATES[t.kind], t.phrases)
    ]
    records += [PromptRecord(p, h.name, True) for h in HARMS for p in _surface_forms(lx.HARM_TEMPLATES, h.phrases)]
    unique = {r.prompt: r for r in records}
    assert len(unique) == len(records), "two topics produce the same prompt string"
    return records
