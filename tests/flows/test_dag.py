"""The stage order is declared once (dvc.yaml); the Prefect flow follows DVC's own graph."""

import shutil
from pathlib import Path

import networkx as nx
import pytest

from flows.dag import check_inputs, stage_order

ROOT = Path(__file__).resolve().parents[2]


def test_flow_order_is_a_topological_order_of_dvc_graph():
    from dvc.repo import Repo

    full = Repo(str(ROOT)).index.graph  # edges point from a stage to the stage it depends on
    # the root pipeline's stages (profiles/ hold pipelines and .dvc files of their own, addressed by path)
    graph = full.subgraph([s for s in full.nodes if ":" not in s.addressing and "/" not in s.addressing])
    order = stage_order(ROOT / "dvc.yaml")
    assert sorted(order) == sorted(s.addressing for s in graph.nodes)
    position = {name: i for i, name in enumerate(order)}
    for stage, upstream in graph.edges():
        assert position[upstream.addressing] < position[stage.addressing], (stage, upstream)
    assert order[0] == "data"
    assert nx.is_directed_acyclic_graph(graph)


def test_cycle_is_reported(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: x\n    deps: [b.txt]\n    outs: [a.txt]\n"
        "  b:\n    cmd: y\n    deps: [a.txt]\n    outs: [b.txt]\n"
    )
    with pytest.raises(ValueError, match="cycle"):
        stage_order(tmp_path / "dvc.yaml")


def test_every_dvc_stage_has_a_task_and_its_own_params_section():
    import yaml

    from rlhf.config import SECTIONS
    from tasks.stages import STAGES

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGES) == set(SECTIONS)
    for name, spec in stages.items():
        assert spec["params"][0] == name, f"stage {name} must list its own params section first"
        other = [str(p).split(".")[0] for p in spec["params"][1:]]
        assert set(other) <= set(STAGES[name].reads), f"stage {name} lists params of sections it does not read"
        assert spec["cmd"].startswith(f"rlhf {name}")


def test_a_missing_upstream_output_is_one_clear_error_naming_the_stage_to_run(tmp_path):
    from rlhf.errors import UserError

    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "artifacts" / "data").mkdir(parents=True)
    (tmp_path / "artifacts" / "tokenizer").mkdir()
    (tmp_path / "artifacts" / "sft").mkdir()
    check_inputs("sft", tmp_path)  # artifacts/data and artifacts/tokenizer are there
    with pytest.raises(UserError, match=r"stage 'ppo' needs .*artifacts/reward, which is missing: run the 'reward' stage first"):
        check_inputs("ppo", tmp_path)


def test_a_profiles_raw_data_is_a_tracked_input_of_its_data_stage_only():
    """A worker pulls the `.dvc` files that track a stage's deps (inputs no stage writes): the real
    profile's `data` stage reads raw/, which raw.dvc versions; no other stage reads it, and the root
    pipeline (synthetic data) has none."""
    from flows.dag import read_stages, tracked_inputs

    real = ROOT / "profiles" / "real"
    stages = read_stages(real / "dvc.yaml")
    assert tracked_inputs(stages, "data", real) == ["raw.dvc"]
    assert all(tracked_inputs(stages, s, real) == [] for s in stages if s != "data")
    root = read_stages(ROOT / "dvc.yaml")
    assert all(tracked_inputs(root, s, ROOT) == [] for s in root)


def test_the_experiment_follows_the_profile(tmp_path, monkeypatch):
    from tasks.env import EXPERIMENT_ENV, experiment_name

    monkeypatch.delenv(EXPERIMENT_ENV, raising=False)
    (tmp_path / "profiles" / "real").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert experiment_name() == "rlhf"
    monkeypatch.chdir(tmp_path / "profiles" / "real")
    assert experiment_name() == "rlhf-real"
    monkeypatch.setenv(EXPERIMENT_ENV, "mine")
    assert experiment_name() == "mine"
