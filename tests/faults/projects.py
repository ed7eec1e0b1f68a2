"""Test support: projects made of copies of the fault suite's world, and what a write left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

from rlhf.paths import Paths


def fresh(world: Paths, root: Path, artifacts: list[str]) -> Paths:
    """A project at `root` holding copies of the world's `artifacts` (data, tokenizer, sft, ...)."""
    paths = Paths(root)
    for name in artifacts:
        shutil.copytree(world.artifacts / name, paths.artifacts / name)
    return paths


def hidden(folder: Path) -> list[Path]:
    """Names starting with a dot anywhere under `folder`: the temporary files and directories of
    `rlhf.files` (`.<name>.tmp-*`, `.<name>.old-*`, `.<name>.*.tmp`) that a write left behind."""
    return sorted(folder.rglob(".*")) if folder.is_dir() else []
