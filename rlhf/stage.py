"""The contract between a library stage and the task that runs it.

A stage function in `rlhf/` has the signature `run_<stage>(cfg, paths) -> StageOutput`: it reads
its inputs from `paths`, writes its outputs there, and returns what happened. It never logs to a
tracker; the task in `tasks/` turns a `StageOutput` into a metrics JSON and MLflow records, and
may listen to the history rows while the stage runs (`listening`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.files import atomic_dir


@dataclass
class StageOutput:
    # Final metrics: flat `{name: float}` or, for `evaluate`, `{policy: {name: float}}`.
    # Written to `metrics/<stage>.json` and logged to MLflow (nested keys joined with "/").
    metrics: dict[str, Any]
    # Per-step training curves: each dict has an integer "step" and float metrics.
    history: list[dict[str, float]] = field(default_factory=list)
    # Datasets the stage read, logged as MLflow dataset inputs: {name: path}.
    inputs: dict[str, Path] = field(default_factory=dict)
    # Report files (JSON, Markdown, ...) logged as MLflow artifacts.
    reports: list[Path] = field(default_factory=list)
    # Tables (lists of flat dict rows) logged with `mlflow.log_table`: {file name: rows}.
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Trained model directories to log and register in MLflow: {registered name: directory}.
    models: dict[str, Path] = field(default_factory=dict)

    @staticmethod
    def registered_name(stage: str) -> str:
        """The MLflow registered-model name of a stage's trained model: `rlhf-sft`, `rlhf-reward`,
        `rlhf-ppo`, `rlhf-dpo`. The prefix keeps them apart from other projects' models in a shared
        registry."""
        return f"rlhf-{stage}"


# Who hears each history row as a trainer logs it (the task layer's tracker, `tasks.live`): the
# library only calls this function, in the main process, and never imports a tracker.
_LISTENER: ContextVar[Callable[[dict[str, float]], None] | None] = ContextVar("history_listener", default=None)


@contextmanager
def listening(listener: Callable[[dict[str, float]], None]) -> Iterator[None]:
    """Within the block, every trainer hands each new history row to `listener` as it logs it."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def heard(row: dict[str, float]) -> None:
    """Hand a history row to the listener, if one is listening."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(row)


SKIPPED = "SKIPPED"  # marker file of a stage that params switched off; evaluation leaves it out


def skip_stage(stage_dir: Path, stage: str) -> StageOutput:
    """The output of a stage switched off with `<stage>.enabled: false`: its folder holds only the
    SKIPPED marker (no model), and its one metric `stage/enabled` is 0."""
    with atomic_dir(stage_dir) as tmp:
        (tmp / SKIPPED).write_text(f"{stage}.enabled is false in params.yaml\n", encoding="utf-8")
    return StageOutput(metrics={"stage/enabled": 0.0})


def is_skipped(stage_dir: Path) -> bool:
    return (stage_dir / SKIPPED).exists()


def have(rows: list[dict[str, Any]], *columns: str) -> bool:
    """Whether every row holds a value in each column: the embedded world's gold columns (`*_gold`,
    `p_chosen`, ...) are optional, and metrics that need them are left out when they are missing."""
    return bool(rows) and all(r.get(c) is not None for r in rows for c in columns)
