"""Tracking that never costs a stage its result.

A stage's outputs and `metrics/<stage>.json` are written before MLflow is called. When the tracking
server cannot be reached (after MLflow's own bounded HTTP retries, see `tasks.env`), the stage's
record (params, metrics, curves, and the paths of its inputs, reports and models) is written to
`.state/tracking-outbox/<record_id>.json` and the stage still succeeds. The next stage that
tracks, the next pipeline run, or `rlhf tracking sync` replays the outbox oldest first.

Each record carries a unique `record_id`, tagged on its MLflow run. A replay that finds a finished
run with that tag only removes the record (a run logged before the connection dropped is not
logged twice); an unfinished run with the tag (the server went away mid-record) is deleted and
logged again, so nothing is lost or duplicated.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rlhf.files import write_json
from rlhf.stage import StageOutput
from tasks.env import PARENT_RUN_ENV, provenance, state_dir

OUTBOX = "tracking-outbox"


def outbox_dir(root: Path | None = None) -> Path:
    return state_dir(root) / OUTBOX


def _plain(value: Any) -> Any:
    """JSON for what `json` does not know: numbers of NumPy or torch, paths."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def new_record_id(stage: str) -> str:
    """Unique, and sorting by the time it was made."""
    return f"{datetime.now():%Y%m%d-%H%M%S-%f}-{stage}-{uuid.uuid4().hex[:8]}"


def make_record(stage: str, params: dict[str, Any], output: StageOutput, seconds: float,
                record_id: str | None = None, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything `log_stage` needs, as plain JSON (paths as the stage gave them); `live`: the run
    that `tasks.live.LiveRun` opened for this record, which the record finishes."""
    record = {
        "record_id": record_id or new_record_id(stage),
        "live": live,
        "stage": stage,
        "params": params,
        "seconds": seconds,
        "parent_run_id": os.environ.get(PARENT_RUN_ENV) or None,
        "origin": provenance(),  # the commit and Prefect run that produced it, not the replay's
        "output": {
            "metrics": output.metrics,
            "history": output.history,
            "inputs": {k: str(v) for k, v in output.inputs.items()},
            "reports": [str(p) for p in output.reports],
            "tables": output.tables,
            "models": {k: str(v) for k, v in output.models.items()},
        },
    }
    return json.loads(json.dumps(record, default=_plain))


def record_output(record: dict[str, Any]) -> StageOutput:
    out = record["output"]
    return StageOutput(
        metrics=out["metrics"],
        history=out["history"],
        inputs={k: Path(v) for k, v in out["inputs"].items()},
        reports=[Path(p) for p in out["reports"]],
        tables=out["tables"],
        models={k: Path(v) for k, v in out["models"].items()},
    )


def enqueue(record: dict[str, Any], root: Path | None = None) -> Path:
    """Write one record to the outbox (atomically: a crash leaves the old state or the whole file)."""
    path = outbox_dir(root) / f"{record['record_id']}.json"
    write_json(path, record)
    return path


def pending(root: Path | None = None) -> list[Path]:
    """The outbox's records, oldest first (their names start with the time they were queued)."""
    folder = outbox_dir(root)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def replay(log: Callable[[dict[str, Any]], str], root: Path | None = None) -> tuple[list[str], str | None]:
    """Log every queued record with `log(record) -> run id`, oldest first, removing each once it is
    logged; stops at the first failure (the server is still away) and leaves the rest queued.
    Returns (the run ids logged, the error that stopped it or None)."""
    done: list[str] = []
    for path in pending(root):
        record = json.loads(path.read_text(encoding="utf-8"))
        try:
            done.append(log(record))
        except Exception as err:  # noqa: BLE001 - any tracking failure keeps the record queued
            return done, f"{type(err).__name__}: {err}"
        path.unlink()
    return done, None
