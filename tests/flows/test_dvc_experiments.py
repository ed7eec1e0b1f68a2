"""DVC experiments on tiny params, as the README shows them: `dvc exp run -S ppo.enabled=false`,
`dvc metrics diff`, `dvc exp run -S dpo.beta=0.2 --queue` + `dvc queue start`, `dvc exp show` with
the evaluation metrics as columns; the queued experiment, which DVC runs in a temporary copy of the
repository, logs to the project's tracking store."""

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.flows.test_dvc import _clone
from tests.flows.test_metric_names import TINY_PARAMS

pytestmark = pytest.mark.slow


def dvc(clone: Path, env: dict, *args: str, timeout: float = 900) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"dvc {' '.join(args)}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_experiments_run_queue_show_and_diff(tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    clone = tmp_path / "clone"
    clone.mkdir()
    _clone(clone)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    for section, values in yaml.safe_load(TINY_PARAMS).items():
        params[section].update(values)
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "RLHF_"))}
    env.update(PYTHONPATH=str(clone), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PREFECT_API_URL=PREFECT_API_URL.value(), RLHF_MLFLOW_EXPERIMENT="exps")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]

    dvc(clone, env, "repro")  # the baseline, committed
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run(git + ["commit", "-qm", "baseline"], cwd=clone, check=True)

    dvc(clone, env, "exp", "run", "-S", "ppo.enabled=false", "-n", "no-ppo")
    diff = dvc(clone, env, "metrics", "diff", "--all")
    assert "ppo.eval/kl_to_ref" in diff and "stage/enabled" in diff  # PPO's evaluation is gone, its stage off

    dvc(clone, env, "exp", "run", "-S", "dpo.beta=0.2", "--queue", "-n", "beta-02")
    dvc(clone, env, "queue", "start")
    deadline = time.monotonic() + 900
    while True:
        status = dvc(clone, env, "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(5)
    assert "Success" in status, status

    table = list(csv.DictReader(io.StringIO(dvc(clone, env, "exp", "show", "--csv"))))
    by_name = {row["Experiment"]: row for row in table if row["Experiment"]}
    assert {"no-ppo", "beta-02"} <= set(by_name)
    columns = list(table[0])

    def column(name: str) -> str:  # DVC prefixes a name with its file where two files share it
        return next(c for c in columns if c == name or c.endswith(f":{name}"))

    assert by_name["beta-02"][column("dpo.beta")] == "0.2"
    assert by_name["no-ppo"][column("ppo.enabled")].lower() == "false"
    for name in ("dpo.eval/safety/all", "sft.eval/helpfulness/all"):  # the evaluation as columns
        assert by_name["beta-02"][column(name)] not in ("", None)

    mlflow.set_tracking_uri(f"sqlite:///{clone / '.state' / 'mlflow.db'}")  # the project's store
    try:
        runs = mlflow.search_runs(experiment_names=["exps"], filter_string="tags.stage = 'dpo'", output_format="list")
    finally:
        mlflow.set_tracking_uri(None)
    assert "0.2" in {r.data.params.get("beta") for r in runs}  # the queued experiment's run is here
