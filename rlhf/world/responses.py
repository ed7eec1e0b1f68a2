"""Response styles: how the world's simulated assistants answer, from excellent to harmful.

A style is a small function of (subject, rng) that strings sentences from the lexicon together.
The SFT demonstrations draw styles from a deliberately mediocre mix (`DataConfig.benign_mix`,
`harmful_mix`); the preference pairs draw them uniformly, so the reward model sees every kind of
answer side by side. The gold score each style earns follows from the judge's rubric; the comment
on each style states it.
"""

from __future__ import annotations

import random
from typing import Callable

from rlhf.world import lexicon as lx
from rlhf.world.harms import Harm
from rlhf.world.topics import TOPICS, Topic


def _facts(topic: Topic, k: int, rng: random.Random) -> list[str]:
    """k distinct facts of the topic, in the topic's own order (the order reads naturally)."""
    keep = sorted(rng.sample(range(len(topic.facts)), k))
    return [topic.facts[i] for i in keep]


def _other_topic(name: str, rng: random.Random) -> Topic:
    return rng.choice([t for t in TOPICS if t.name != name])


def _maybe(p: float, pool: tuple[str, ...], rng: random.Random) -> list[str]:
    return [rng.choice(pool)] if rng.random() < p else []


# --- benign prompts ---
def good(topic: Topic, rng: random.Random) -> list[str]:
    """Polite, three facts: helpfulness 5."""
    opener = _maybe(0.7, lx.OPENERS, rng)
    closer = _maybe(0.7, lx.CLOSERS, rng) or ([] if opener else [rng.choice(lx.CLOSERS)])
    return opener + _facts(topic, 3, rng) + closer


def partial(topic: Topic, rng: random.Random) -> list[str]:
    """One or two facts: helpfulness 3 or 4."""
    return _maybe(0.3, lx.OPENERS, rng) + _facts(topic, rng.choice((1, 2)), rng)


def generic(topic: Topic, rng: random.Random) -> list[str]:
    """Vague filler with no fact: helpfulness 2."""
    return _maybe(0.3, lx.OPENERS, rng) + rng.sample(lx.GENERIC, rng.choice((1, 2)))


def off_topic(subject: Topic | Harm, rng: random.Random) -> list[str]:
    """Facts about another topic: helpfulness 1 (safety 3 on a harmful prompt)."""
    return _facts(_other_topic(subject.name, rng), rng.choice((1, 2)), rng)


def repetitive(topic: Topic, rng: random.Random) -> list[str]:
    """One fact said two or three times: helpfulness 2, no more than the fact alone."""
    return _facts(topic, 1, rng) * rng.choice((2, 3))


def wrong_refusal(topic: Topic, rng: random.Random) -> list[str]:
    """Declines a harmless request: helpfulness 1."""
    return [rng.choice(lx.REFUSALS)]


def rude(topic: Topic, rng: random.Random) -> list[str]:
    """A brush-off, sometimes with one fact: helpfulness 1-2, safety 4."""
    return [rng.choice(lx.RUDE)] + _facts(topic, rng.choice((0, 1)), rng)


# --- harmful prompts ---
def safe_refusal(harm: Harm, rng: random.Random) -> list[str]:
    """Declines and offers this request's safe alternative: safety 5, helpfulness 4-5."""
    return [rng.choice(lx.REFUSALS), rng.choice(harm.alternatives)] + _maybe(0.3, (lx.TAKE_CARE,), rng)


def refusal(harm: Harm, rng: random.Random) -> list[str]:
    """A bare refusal: safety 4, helpfulness 3."""
    return [rng.choice(lx.REFUSALS)]


def evasive(harm: Harm, rng: random.Random) -> list[str]:
    """Neither complies nor declines: safety 3, helpfulness 2."""
    return rng.sample(lx.GENERIC, rng.choice((1, 2)))


def comply(harm: Harm, rng: random.Random) -> list[str]:
    """Goes along with two or three harmful details: safety 1."""
    k = rng.choice((2, 3))
    keep = sorted(rng.sample(range(len(harm.compliance)), k))
    return [rng.choice(lx.COMPLY_OPENERS)] + [harm.compliance[i] for i in keep]


def partial_comply(harm: Harm, rng: random.Random) -> list[str]:
    """A hedge, then one harmful detail: safety 2."""
    return [rng.choice(lx.HEDGES), rng.choice(harm.compliance)]


def leaky_refusal(harm: Harm, rng: random.Random) -> list[str]:
    """Says no, then leaks a harmful detail anyway: safety 2."""
    return [rng.choice(lx.REFUSALS), lx.LEAK, rng.choice(harm.compliance)]


BENIGN_STYLES: dict[str, Callable[[Topic, random.Random], list[str]]] = {
    "good": good,
    "partial": partial,
    "generic": generic,
    "off_topic": off_topic,
    "repetitive": repetitive,
    "refusal": wrong_refusal,
    "rude": rude,
}
HARMFUL_STYLES: dict[str, Callable[[Harm, random.Random], list[str]]] = {
    "safe_refusal": safe_refusal,
    "refusal": refusal,
    "evasive": evasive,
    "off_topic": off_topic,
    "comply": comply,
    "partial_comply": partial_comply,
    "leaky_refusal": leaky_refusal,
}


def respond(style: str, subject: Topic | Harm, harmful: bool, rng: random.Random) -> str:
    """One response of `style` to a prompt about `subject`, as plain text."""
    styles = HARMFUL_STYLES if harmful else BENIGN_STYLES
    return " ".join(styles[style](subject, rng))
