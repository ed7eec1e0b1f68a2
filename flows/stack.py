"""`rlhf stack up | down | status | worker`: the servers and workers of the pipeline on one machine.

`up` starts, in this order, each only if it is not already running:
- a Prefect server (its database in `.state/prefect`),
- an MLflow tracking server (SQLite `.state/mlflow.db`, artifacts in `.state/mlartifacts`),
- the work pools named in `prefect.yaml`, and its deployments (`prefect deploy --all`),
- one process worker per pool, running this clone's code.
Each process runs in its own session, with its PID file and log in `.state/stack/`; `up` waits
until each answers, and `down` stops exactly the processes these PID files name. Servers bind to
127.0.0.1 unless `--host` says otherwise. `worker POOL` adds one worker of this clone to a running
stack (another clone, another machine: set PREFECT_API_URL and MLFLOW_TRACKING_URI first).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from flows.prefect_api import reachable
from rlhf.errors import UserError
from rlhf.files import write_json

START_S = 120


def stack_dir(root: Path) -> Path:
    return root / ".state" / "stack"


def pools(root: Path) -> list[str]:
    """The work pools of `prefect.yaml`'s deployments, in order of first use."""
    spec = yaml.safe_load((root / "prefect.yaml").read_text(encoding="utf-8"))
    names = [d["work_pool"]["name"] for d in spec.get("deployments", []) if d.get("work_pool")]
    return list(dict.fromkeys(names))


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _alive(record: dict) -> bool:
    try:
        os.kill(record["pid"], 0)
        cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, KeyError):
        return False
    return record["marker"] in cmdline  # not another process that reused the PID


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def start(root: Path, name: str, cmd: list[str], env: dict[str, str], ready: Callable[[], bool],
          say: Callable[[str], None], url: str | None = None) -> dict:
    """Start `cmd` as component `name` unless its PID file names a live process; wait for `ready`."""
    folder = stack_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    pid_file = folder / f"{name}.json"
    record = _read(pid_file)
    if record and _alive(record):
        say(f"{name}: already running (pid {record['pid']}){f' at {url}' if url else ''}")
        return record
    with (folder / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    record = {"pid": proc.pid, "marker": " ".join(cmd[1:4]), "url": url, "log": str(folder / f"{name}.log")}
    write_json(pid_file, record)
    deadline = time.monotonic() + START_S
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_one(pid_file)
            raise UserError(f"{name} did not start within {START_S} s (exit code {proc.poll()}); see {record['log']}")
        time.sleep(0.5)
    say(f"{name}: started (pid {proc.pid}){f' at {url}' if url else ''}; log {record['log']}")
    return record


def stop_one(pid_file: Path, grace_s: float = 20) -> bool:
    """Stop the process group a PID file names (TERM, then KILL) and remove the file."""
    record = _read(pid_file)
    stopped = False
    if record and _alive(record):
        os.killpg(record["pid"], signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _alive(record) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(record):
            os.killpg(record["pid"], signal.SIGKILL)
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


def _worker_registered(api_url: str, pool: str, name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            return any(w.name == name for w in client.read_workers_for_work_pool(pool))
    except Exception:  # noqa: BLE001 - not yet
        return False


def ensure_pools(api_url: str, names: list[str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_work_pool(name)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def start_worker(root: Path, pool: str, api_url: str, tracking_uri: str, say: Callable[[str], None]) -> dict:
    """One process worker of `pool` that runs this clone's code (PYTHONPATH) in this clone."""
    name = f"{pool}-{os.uname().nodename}-{root.name}"
    env = {**os.environ, "PREFECT_API_URL": api_url, "MLFLOW_TRACKING_URI": tracking_uri,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    cmd = [_bin("prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", name]
    return start(root, f"worker-{pool}", cmd, env, lambda: _worker_registered(api_url, pool, name), say)


def up(root: Path, host: str, prefect_port: int, mlflow_port: int, say: Callable[[str], None],
       workers: list[str] | None = None) -> dict[str, str]:
    """Start the stack (module docstring); `workers`: the pools that get a worker here (None: all)."""
    state = (root / ".state").resolve()
    api_url = f"http://{host}:{prefect_port}/api"
    tracking_uri = f"http://{host}:{mlflow_port}"
    env = {**os.environ, "PREFECT_HOME": str(state / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    start(root, "prefect-server", [_bin("prefect"), "server", "start", "--host", host, "--port", str(prefect_port)],
          env, lambda: reachable(api_url), say, api_url)
    start(root, "mlflow-server", [_bin("mlflow"), "server", "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
                                  "--artifacts-destination", str(state / "mlartifacts"), "--host", host,
                                  "--port", str(mlflow_port), "--workers", "1"],
          {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, lambda: reachable(tracking_uri),
          say, tracking_uri)
    names = pools(root)
    ensure_pools(api_url, names)
    deployed = subprocess.run([_bin("prefect"), "--no-prompt", "deploy", "--all"], cwd=root, capture_output=True,
                              text=True, env={**os.environ, "PREFECT_API_URL": api_url})
    if deployed.returncode != 0:
        raise UserError(f"prefect deploy --all failed: {(deployed.stderr or deployed.stdout).strip()[-2000:]}")
    say(f"deployments of prefect.yaml registered in pools {', '.join(names)}")
    unknown = sorted(set(workers or []) - set(names))
    if unknown:
        raise UserError(f"no work pool {unknown} in prefect.yaml (its pools: {', '.join(names)})")
    for pool in names if workers is None else workers:
        start_worker(root, pool, api_url, tracking_uri, say)
    urls = {"PREFECT_API_URL": api_url, "MLFLOW_TRACKING_URI": tracking_uri}
    write_json(stack_dir(root) / "urls.json", urls)
    return urls


def down(root: Path, say: Callable[[str], None]) -> int:
    """Stop every process a PID file of this clone's stack names; returns how many were running."""
    folder = stack_dir(root)
    count = 0
    # workers first, servers last
    for pid_file in sorted(folder.glob("*.json") if folder.is_dir() else [], key=lambda p: not p.stem.startswith("worker")):
        if pid_file.stem == "urls":
            continue
        if stop_one(pid_file):
            say(f"{pid_file.stem}: stopped")
            count += 1
    return count


def status(root: Path) -> list[tuple[str, bool, str]]:
    """(component, running, detail) for each PID file of this clone's stack."""
    folder = stack_dir(root)
    rows = []
    for pid_file in sorted(folder.glob("*.json") if folder.is_dir() else []):
        record = _read(pid_file)
        if pid_file.stem == "urls" or record is None:
            continue
        alive = _alive(record)
        healthy = alive and (record.get("url") is None or reachable(record["url"]))
        detail = f"pid {record['pid']}" + (f", {record['url']}" if record.get("url") else "") + f", log {record['log']}"
        rows.append((pid_file.stem, bool(healthy), detail))
    return rows
