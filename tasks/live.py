"""MLflow while a stage trains: curves as they grow, and a FAILED run that keeps them.

`compute` opens a `LiveRun` before the library function starts and hands `LiveRun.row` to the library
as its training listener (`rlhf.train.loop.listening`): every history row (each `log_every` steps)
goes to MLflow at once. The run is tagged like the stage's final record (`stage`, `algorithm`,
provenance, `record_id`), so `track` finishes this same run (`tasks.tracking.log_record`) instead of
opening a second one, logging only the rows that did not reach it live. A stage that raises ends
its run FAILED, with the error message as the tag `error` and the artifact `error.txt`.

Tracking never stops training: if MLflow cannot be reached, live logging turns itself off with one
warning, and the stage's final record (`tasks.outbox`) carries every row.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import mlflow

from tasks.env import PARENT_RUN_ENV

LIVE_TAG = "live"  # on a run opened by LiveRun; `log_record` continues such a run


class LiveRun:
    """One stage's MLflow run, opened before training starts."""

    def __init__(self, stage: str, record_id: str, warn: Callable[[str], None]) -> None:
        from tasks.tracking import existing_parent, stage_tags, use_experiment

        self.warn = warn
        self.run_id: str | None = None  # kept when logging turns off: the final record finishes the run
        self.on = False
        self.through: int | None = None  # the last history step that reached MLflow
        self.client = mlflow.tracking.MlflowClient()
        try:
            experiment = use_experiment()
            parent = existing_parent(os.environ.get(PARENT_RUN_ENV))
            tags = {**stage_tags(stage, record_id), LIVE_TAG: "true", "mlflow.runName": stage,
                    **({"mlflow.parentRunId": parent} if parent else {})}
            self.run_id = self.client.create_run(experiment, tags=tags).info.run_id
            self.on = True
        except Exception as err:  # noqa: BLE001 - tracking never stops a stage
            self._off(err)

    def _off(self, err: BaseException) -> None:
        self.warn(f"live MLflow logging is off for this stage ({type(err).__name__}: {err}); "
                  "its final record carries every point")
        self.on = False

    def row(self, row: dict[str, Any]) -> None:
        """The library's listener: one history row `{"step": s, name: value, ...}`."""
        if not self.on:
            return
        from mlflow.entities import Metric

        step, now = int(row["step"]), int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in row.items() if k != "step"]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
            self.through = step
        except Exception as err:  # noqa: BLE001
            self._off(err)

    def fail(self, err: BaseException) -> None:
        """End the run FAILED, keeping what it logged and the error message (tried even when live
        logging turned off: the server may be back)."""
        if self.run_id is None:
            return
        message = str(err) or type(err).__name__
        try:
            self.client.set_tag(self.run_id, "error", message[:5000])
            self.client.log_text(self.run_id, f"{type(err).__name__}: {message}\n", "error.txt")
            self.client.set_terminated(self.run_id, status="FAILED")
        except Exception:  # noqa: BLE001 - the stage's own error is what the user needs to see
            pass

    def info(self) -> dict[str, Any] | None:
        """What `track` needs to finish this run (None: nothing live)."""
        return None if self.run_id is None else {"run_id": self.run_id, "through": self.through}
