"""prefect.yaml declares `full-pipeline` (dispatching) and one worker deployment per stage of
dvc.yaml and of every profile's dvc.yaml, each in a pool; training and evaluation go to the GPU pool."""

from pathlib import Path

import yaml

from flows.dag import stage_order
from flows.stack import pools

ROOT = Path(__file__).resolve().parents[2]


def test_every_stage_has_its_deployment_in_the_right_pool():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    full = deployments.pop("full-pipeline")
    assert full["entrypoint"] == "flows/pipeline.py:pipeline" and full["parameters"] == {"dispatch": True}
    projects = [ROOT / "dvc.yaml", *sorted(ROOT.glob("profiles/*/dvc.yaml"))]
    assert set(deployments) == set().union(*(stage_order(p) for p in projects))
    for stage, d in deployments.items():
        assert d["entrypoint"] == "flows/worker.py:stage_on_worker" and d["parameters"] == {"stage": stage}
        gpu = stage in ("sft", "reward", "ppo", "dpo", "evaluate")
        assert d["work_pool"]["name"] == ("rlhf-gpu" if gpu else "rlhf-cpu"), stage
    assert pools(ROOT) == ["rlhf-cpu", "rlhf-gpu"]
    assert spec["pull"] == [{"flows.worker.enter_clone": {}}]
