"""Spies shared by the trainer tests."""

import torch


def record_adamw(monkeypatch) -> list[dict]:
    """Record the keyword arguments of every `torch.optim.AdamW` built from now on."""
    built: list[dict] = []
    real = torch.optim.AdamW

    def spy(*args, **kwargs):
        built.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    return built
