import os
import tempfile

import pytest

# Offline and quiet for every test; set before any library reads them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# Tests never write to the project's tracking store: a stage's task opens its MLflow run as it
# starts (tasks.live), so a test that runs a task logs to this session's store unless it sets its own.
SESSION_TRACKING_URI = f"sqlite:///{tempfile.mkdtemp(prefix='rlhf-tests-mlflow-')}/mlflow.db"
os.environ["MLFLOW_TRACKING_URI"] = SESSION_TRACKING_URI


@pytest.fixture(autouse=True)
def session_tracking_store():
    """After every test, MLFLOW_TRACKING_URI names this session's store again if the test unset it:
    `mlflow.set_tracking_uri(None)`, which tests call to undo their own URI, also unsets the
    variable, and every later stage test would then log to MLflow's default store, a `mlflow.db` in
    the working folder. A URI a test or a module fixture set stays as it is."""
    yield
    os.environ.setdefault("MLFLOW_TRACKING_URI", SESSION_TRACKING_URI)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny test models run fastest on one thread; several contending threads on a busy 2-core
    runner slow them many times over."""
    from rlhf.train.runtime import torch_threads

    with torch_threads(1):
        yield
