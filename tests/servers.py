"""Test support: real servers started by tests (an MLflow tracking server) on free local ports."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

START_S = 60  # the server starts in ~6 s on a quiet 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: str, port: int, folder: Path) -> subprocess.Popen:
    """`mlflow server` on `store`, in its own process group (it starts worker processes), once
    `/health` answers."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers: a faster start
    with (folder / f"server-{time.monotonic_ns()}.log").open("wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", store,
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_S
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            pytest.fail(f"mlflow server did not answer within {START_S} s (exit code {proc.returncode})")
        time.sleep(0.1)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGKILL the server and its workers: an outage, not a shutdown."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
