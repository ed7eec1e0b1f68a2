"""Turn a library `StageOutput` into MLflow records.

Layout: experiment `rlhf`; one parent run per pipeline execution (`rlhf pipeline`) and one run per
stage under it (the parent's id travels in `RLHF_PARENT_RUN_ID`). A stage run with no parent is a
top-level run. Stage runs carry the tag `stage=<name>`, so the UI can filter and compare them.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from rlhf.files import file_digest
from rlhf.stage import StageOutput
from tasks.env import PARENT_RUN_ENV, experiment_name, provenance, state_dir


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a/b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def file_md5(path: Path) -> str:
    """The DVC hash of a file (DVC 3 hashes a file by the md5 of its bytes)."""
    return file_digest(path, "md5")


def use_experiment(root: Path | None = None) -> str:
    """Select (creating if needed) the experiment; with a local store its artifacts go to the state folder."""
    name = experiment_name()
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        # a local store keeps artifacts in the state folder; a tracking server chooses its own
        # (`mlflow server --artifacts-destination`), which every worker can reach
        remote = mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks"))
        location = None if remote else (state_dir(root) / "mlartifacts").resolve().as_uri()
        exp_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextmanager
def pipeline_run(name: str, warn: Callable[[str], None] = print) -> Iterator[str | None]:
    """A parent run for one pipeline execution; yields its id and exports it to child processes.
    With the tracking server away it yields None (and `warn`s): the stages run and queue their
    records (`tasks.outbox`) as top-level runs."""
    try:
        use_experiment()
        active = mlflow.start_run(run_name=name, tags={"kind": "pipeline"})
    except Exception as err:  # noqa: BLE001 - tracking never stops the pipeline
        warn(f"MLflow at {mlflow.get_tracking_uri()} is unreachable ({type(err).__name__}: {err}); "
             "the stages run and queue their records for `rlhf tracking sync`")
        yield None
        return
    with active as run:
        mlflow.set_tags(provenance())
        previous = os.environ.get(PARENT_RUN_ENV)
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        try:
            yield run.info.run_id
        finally:
            if previous is None:
                os.environ.pop(PARENT_RUN_ENV, None)
            else:
                os.environ[PARENT_RUN_ENV] = previous
    _drop_if_empty(run.info.run_id)


def _drop_if_empty(run_id: str) -> None:
    """A pipeline execution in which DVC found every stage up to date leaves no empty parent run."""
    try:
        children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{run_id}'", output_format="list")
        if not children:
            mlflow.delete_run(run_id)
    except Exception:  # noqa: BLE001 - tidying the tracking store never fails a pipeline
        pass


def _log_inputs(inputs: Mapping[str, Path], stage: str) -> None:
    import pandas as pd

    for name, path in inputs.items():
        path = Path(path)
        if not path.is_file():
            continue
        df = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.DataFrame()
        with warnings.catch_warnings():  # a local path matches two equivalent source kinds
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(df, source=str(path), name=name, digest=file_md5(path))
        mlflow.log_input(dataset, context=stage)
        mlflow.set_tag(f"data/{name}", dataset.digest)  # the file's DVC md5, also as a searchable tag


def _log_model(registered_name: str, model_dir: Path) -> None:
    from tasks.models import log_model_dir

    log_model_dir(model_dir, registered_name)


def _runs_tagged(record_id: str) -> list[Any]:
    """The runs of this experiment that carry `record_id` (at most one finished, when replayed)."""
    return mlflow.search_runs(filter_string=f"tags.record_id = '{record_id}'", output_format="list")


def existing_parent(parent: str | None) -> str | None:
    """`parent` if the tracking store holds that run (a pipeline that started while the server was
    away has none), else None: the stage run is then top-level."""
    if not parent:
        return None
    try:
        mlflow.get_run(parent)
    except mlflow.exceptions.MlflowException:
        return None
    return parent


def log_record(record: Mapping[str, Any]) -> str:
    """Log one outbox record (`tasks.outbox.make_record`) as an MLflow run; returns the run id.

    Idempotent: a finished run tagged with the record's id is returned as it is, and an unfinished
    one (the connection dropped mid-record) is deleted before the record is logged again."""
    from tasks.outbox import record_output

    use_experiment()
    live = (record.get("live") or {}).get("run_id")
    resume = None
    for run in _runs_tagged(record["record_id"]):
        if run.info.status == "FINISHED":
            return run.info.run_id
        if run.info.run_id == live and run.info.status == "RUNNING":
            resume = live  # the stage's live run (tasks.live): finish it
        else:
            mlflow.delete_run(run.info.run_id)
    return log_stage(record["stage"], record["params"], record_output(record), record["seconds"],
                     record_id=record["record_id"], parent=existing_parent(record.get("parent_run_id")),
                     origin=record.get("origin"), run_id=resume)


POLICY_STAGES = ("sft", "ppo", "dpo")  # the stages whose model is a policy the evaluate stage samples


def attach_evaluation(metrics: Mapping[str, Any], parent: str | None) -> list[str]:
    """Copy each policy's evaluation (`eval/...`, and its `policy/...` figures as `eval/policy/...`)
    onto that policy's own stage run, so that selecting the PPO and DPO runs in the MLflow UI and
    pressing Compare shows which did better; the pipeline's run `parent` gets the whole table as
    `<policy>/eval/...`. The policy's run is its newest finished one under `parent`, else (a stage
    DVC did not rerun) its newest in the experiment. Returns the run ids written to."""
    from mlflow.entities import Metric

    client = mlflow.tracking.MlflowClient()
    exp_id = use_experiment()
    now = int(time.time() * 1000)
    written = []
    for policy in POLICY_STAGES:
        values = metrics.get(policy)
        if not isinstance(values, Mapping):
            continue
        runs = []
        for scope in ([f" and tags.mlflow.parentRunId = '{parent}'"] if parent else []) + [""]:
            runs = client.search_runs([exp_id], f"tags.stage = '{policy}' and attributes.status = 'FINISHED'{scope}",
                                      order_by=["attributes.start_time DESC"], max_results=1)
            if runs:
                break
        if not runs:
            continue
        batch = [Metric(k if k.startswith("eval/") else f"eval/{k}", float(v), now, 0)
                 for k, v in values.items() if isinstance(v, (int, float))]
        client.log_batch(runs[0].info.run_id, metrics=batch)
        written.append(runs[0].info.run_id)
    if parent:
        table = [Metric(k, float(v), now, 0) for k, v in flatten(metrics).items() if isinstance(v, (int, float))]
        client.log_batch(parent, metrics=table)
    return written


def _logged_through(run_id: str, history: list[dict[str, float]]) -> int:
    """The last history step already in run `run_id` (rows go in one batch each: a step is there
    whole or not at all); -1 when none is."""
    keys = [k for k in (history[0] if history else {}) if k != "step"]
    if not keys:
        return -1
    points = mlflow.tracking.MlflowClient().get_metric_history(run_id, keys[0])
    return max((p.step for p in points), default=-1)


def stage_tags(stage: str, record_id: str | None = None, origin: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags of a stage's run: `stage`, `algorithm` for a policy, `record_id` (the outbox record
    it logs) and the `origin` of the execution (`tasks.env.provenance`, taken now if None)."""
    return {"stage": stage, **({"algorithm": stage} if stage in POLICY_STAGES else {}),
            **({"record_id": record_id} if record_id else {}), **(provenance() if origin is None else origin)}


def log_stage(stage: str, params: Mapping[str, Any], output: StageOutput, seconds: float,
              record_id: str | None = None, parent: str | None = None, origin: Mapping[str, str] | None = None,
              run_id: str | None = None) -> str:
    """Record one stage execution as an MLflow run (tagged `stage`, `algorithm` for a policy, the
    `origin` of the execution (`tasks.env.provenance`, taken now if None) and, from the outbox,
    `record_id`) under the pipeline's run `parent`; returns the run id. With `run_id`, finish that
    run (the stage's live run, `tasks.live`), logging only the history rows it does not hold yet."""
    use_experiment()
    if run_id is not None:
        through = _logged_through(run_id, output.history)
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None) as run:
            _log_outcome(stage, params, output, seconds, parent, [r for r in output.history if r["step"] > through])
            return run.info.run_id
    # In the pipeline's own process (`--no-dvc`) its run is active: nest under it (a record replayed
    # from an earlier pipeline lands there too); in a stage process (started by DVC) it is not:
    # name the parent by id.
    active = mlflow.active_run()
    nesting = {"nested": True} if active else {"parent_run_id": parent}
    parent = active.info.run_id if active else parent
    with mlflow.start_run(run_name=stage, tags=stage_tags(stage, record_id, origin), **nesting) as run:
        _log_outcome(stage, params, output, seconds, parent, output.history)
        return run.info.run_id


def _log_figures(stage: str, output: StageOutput) -> None:
    """Training curves (and, for evaluate, the bars per policy and judge and reward against KL) as
    PNG artifacts under `plots/`. A figure that cannot be drawn is a warning, never a lost record."""
    import tempfile

    from rlhf.plots import stage_figures

    with tempfile.TemporaryDirectory() as folder:
        try:
            figures = stage_figures(stage, output.history, output.metrics, folder)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"{stage}: figures not drawn ({type(err).__name__}: {err})", stacklevel=2)
            return
        for png in figures:
            mlflow.log_artifact(str(png), artifact_path="plots")


def _log_outcome(stage: str, params: Mapping[str, Any], output: StageOutput, seconds: float, parent: str | None,
                 history: list[dict[str, float]]) -> None:
    """Into the active run: params, the `history` rows, final metrics, inputs, reports, tables, models."""
    mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flatten(params).items()})
    for row in history:
        step = int(row["step"])
        mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "step"}, step=step)
    final = {k: float(v) for k, v in flatten(output.metrics).items() if isinstance(v, (int, float))}
    final["time/stage_seconds"] = seconds
    # at the last step of the curves: "Latest" in the UI reads the final value, and a curve
    # gets no stray first point at step 0
    mlflow.log_metrics(final, step=max((int(r["step"]) for r in output.history), default=0))
    if stage == "evaluate":
        attach_evaluation(output.metrics, parent)
    _log_figures(stage, output)
    _log_inputs(output.inputs, stage)
    for report in output.reports:
        if Path(report).is_file():
            mlflow.log_artifact(str(report), artifact_path="reports")
    for file_name, rows in output.tables.items():
        if rows:
            import pandas as pd

            mlflow.log_table(pd.DataFrame(rows), artifact_file=file_name)
    for registered_name, model_dir in output.models.items():
        _log_model(registered_name, Path(model_dir))
