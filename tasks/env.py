"""Process settings for an offline, self-contained project; applied by the CLI entry, never on import.

Every value is a default: a variable already set by the user wins.
"""

from __future__ import annotations

import os
from pathlib import Path

EXPERIMENT_ENV = "RLHF_MLFLOW_EXPERIMENT"
PARENT_RUN_ENV = "RLHF_PARENT_RUN_ID"
DEFAULT_EXPERIMENT = "rlhf"


def project_root(cwd: Path | None = None) -> Path:
    """The project's root: the current folder, or, inside the temporary copy in which DVC runs a
    queued experiment (`<root>/.dvc/tmp/exps/<run>/`), the project it was copied from, so that the
    experiment's tracking records land in the project's store and are not thrown away with the copy."""
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def experiment_name() -> str:
    """The MLflow experiment of this process's runs: `RLHF_MLFLOW_EXPERIMENT` if set, else `rlhf` for
    the root project and `rlhf-<name>` for a profile (`profiles/<name>`), whichever machine runs it."""
    if os.environ.get(EXPERIMENT_ENV):
        return os.environ[EXPERIMENT_ENV]
    here = project_root()
    return f"{DEFAULT_EXPERIMENT}-{here.name}" if here.parent.name == "profiles" else DEFAULT_EXPERIMENT


def state_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / ".state"


def tracking_uri(root: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else SQLite in the project's state folder."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(state_dir(root) / 'mlflow.db').resolve()}"


def configure(root: Path | None = None) -> None:
    state = state_dir(root)
    state.mkdir(parents=True, exist_ok=True)
    defaults = {
        # Hugging Face: local files only (the Hub is never needed)
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # Prefect: its home (ephemeral database, settings) inside the project's state folder
        "PREFECT_HOME": str((state / "prefect").resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "DO_NOT_TRACK": "1",
        # MLflow
        "MLFLOW_TRACKING_URI": tracking_uri(root),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # bounded retries against a tracking server (about 10 s, not MLflow's minutes of backoff);
        # what still fails waits in the outbox (tasks.outbox)
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        # DVC
        "DVC_NO_ANALYTICS": "1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def provenance() -> dict[str, str]:
    """Tags that tie a run to what produced it: the git commit of the code (with `+changes` when
    the working tree differs from it) and the Prefect flow run it belongs to."""
    import subprocess

    tags: dict[str, str] = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, timeout=30).stdout.strip()
            tags["git_commit"] = commit.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from prefect.runtime import flow_run

        if flow_run.id:
            tags["prefect_flow_run_id"] = str(flow_run.id)
            tags["prefect_flow_run_name"] = str(flow_run.name)
    except Exception:  # noqa: BLE001 - outside a flow run there is nothing to link
        pass
    return tags
