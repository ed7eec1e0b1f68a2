"""A stage runs as a Prefect flow, writes its metrics JSON and logs its MLflow run."""

import json

import mlflow

from flows.pipeline import stage_flow
from rlhf.paths import Paths


def _tiny_world(paths: Paths) -> None:
    paths.data.mkdir(parents=True)
    rows = [{"prompt": f"How do I water plant {i}?", "response": "Water it lightly once a month."} for i in range(20)]
    for f in (paths.sft_train, paths.sft_heldout):
        f.write_text("\n".join(json.dumps(r) for r in rows))
    paths.pref_train.write_text(json.dumps({"prompt": "p", "chosen": "yes sure", "rejected": "no"}))
    paths.rl_prompts.write_text(json.dumps({"prompt": "How do I water a fern?"}))


def test_tokenizer_stage_through_prefect(tmp_path, prefect_harness, mlflow_sqlite):
    paths = Paths(tmp_path)
    _tiny_world(paths)
    params = tmp_path / "params.yaml"
    params.write_text("tokenizer:\n  vocab_size: 400\n  min_frequency: 1\n")

    metrics = stage_flow("tokenizer", str(params), str(tmp_path))

    assert json.loads(paths.metrics_file("tokenizer").read_text()) == metrics
    assert (paths.tokenizer / "tokenizer.json").exists()
    runs = mlflow.search_runs(experiment_names=["test"], output_format="list")
    (run,) = [r for r in runs if r.data.tags.get("stage") == "tokenizer"]
    assert run.data.params["vocab_size"] == "400"
    # the MLflow run names its Prefect flow run, and the flow run links back to the MLflow run
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    assert run.data.tags["prefect_flow_run_id"]
    with get_client(sync_client=True) as client:  # the Prefect test server is shared by the session's tests
        links = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["mlflow-tokenizer"])))
    (link,) = [a for a in links if str(a.flow_run_id) == run.data.tags["prefect_flow_run_id"]]
    assert run.info.run_id in link.data
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"sft_train", "pref_train", "rl_prompts"}
