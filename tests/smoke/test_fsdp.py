"""SFT, reward, DPO and PPO with `fsdp: true` in 2 CPU processes (gloo; torch FSDP2 shards every
parameter, gradient and AdamW moment over them) match the one-process run: the same loss curve,
gradient norms, held-out metrics and final weights within float tolerance, and the files they
leave are those of a one-process run (full tensors, the same optimizer state)."""

import shutil

import pytest
import torch
import yaml

from rlhf.config import load_config
from rlhf.paths import Paths
from rlhf.train import load_causal_lm
from rlhf.train.checkpoint import list_checkpoints
from tasks.launch import run_in_processes
from tasks.stages import STAGES
from tests.checkpoints import as_if_killed
from tests.smoke.test_data_parallel import LOSS, PARAMS, PPO_CURVE, world  # noqa: F401 (the world fixture)

pytestmark = pytest.mark.slow


def weights(root, stage):
    from safetensors.torch import load_file

    files = sorted((root / "artifacts" / stage / "model").glob("*.safetensors"))
    assert files, f"no weights in {root}/artifacts/{stage}/model"
    return {k: v for f in files for k, v in load_file(f).items()}


def last_optimizer_state(root, stage):
    finished = [p for p in Paths(root).checkpoints(stage).iterdir() if p.name.endswith("-finished")]
    assert len(finished) == 1, finished
    ckpt = list_checkpoints(finished[0])[-1]
    return torch.load(ckpt / "optimizer.pt", weights_only=True)["optimizers"]


@pytest.mark.parametrize("stage, checkpointed", [("sft", False), ("reward", False), ("dpo", False), ("sft", True)],
                         ids=["sft", "reward", "dpo", "sft-activation-checkpointing"])
def test_fsdp_in_two_processes_matches_one_process(world, tmp_path, stage, checkpointed):
    """`checkpointed`: the sharded run also recomputes its blocks' activations in the backward pass
    (transformers checkpoints a block's `forward`, inside FSDP's hooks: the recompute runs while FSDP holds
    the block's gathered weights for its backward)."""
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        shutil.copytree(world, root)
    sharded = {**PARAMS, stage: {**PARAMS[stage], "fsdp": True, "activation_checkpointing": checkpointed}}
    (two / "params.yaml").write_text(yaml.safe_dump(sharded))
    single = STAGES[stage].run(load_config(stage, one / "params.yaml"), Paths(one))
    double = run_in_processes(stage, str(two / "params.yaml"), str(two), 2)

    # 1. the same curve: loss and gradient norm of every step
    assert [r["step"] for r in double.history] == [r["step"] for r in single.history]
    for a, b in zip(single.history, double.history):
        assert b[LOSS[stage]] == pytest.approx(a[LOSS[stage]], rel=1e-5, abs=1e-6), (stage, a["step"])
        assert b["train/grad_norm"] == pytest.approx(a["train/grad_norm"], rel=1e-4, abs=1e-6), (stage, a["step"])
    assert len({r[LOSS[stage]] for r in single.history}) > 1  # it trained: the loss moved
    # 2. the same held-out metrics (computed by the sharded model, in lockstep batches)
    held_out = [k for k in single.metrics if k.startswith("eval/")]
    assert held_out, single.metrics
    for key in held_out:
        assert double.metrics[key] == pytest.approx(single.metrics[key], rel=1e-5, abs=1e-6), (stage, key)
    # 3. the saved model holds the full tensors, under the one-process names
    a, b = weights(one, stage), weights(two, stage)
    assert sorted(a) == sorted(b)
    for name, tensor in a.items():
        assert b[name].shape == tensor.shape, name
        torch.testing.assert_close(b[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    if stage != "reward":
        load_causal_lm(two / "artifacts" / stage / "model")  # loads as a plain transformers model
    # 4. the last checkpoint's optimizer state is whole: the one-process AdamW moments
    opt_a, opt_b = last_optimizer_state(one, stage), last_optimizer_state(two, stage)
    for name in opt_a:
        state_a, state_b = opt_a[name]["state"], opt_b[name]["state"]
        assert sorted(state_a) == sorted(state_b)
        for index, entry in state_a.items():
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(state_b[index][key], entry[key], rtol=1e-3, atol=1e-6,
                                           msg=f"{stage} {name} {index} {key}")


def test_ppo_with_fsdp_in_two_processes_matches_one_process(world, tmp_path):
    """All four models sharded; the rollouts are sampled by the sharded policy, both processes
    decoding in step until both are done."""
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        shutil.copytree(world, root)
    (two / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "ppo": {**PARAMS["ppo"], "fsdp": True}}))
    single = STAGES["ppo"].run(load_config("ppo", one / "params.yaml"), Paths(one))
    double = run_in_processes("ppo", str(two / "params.yaml"), str(two), 2)
    assert [r["step"] for r in double.history] == [r["step"] for r in single.history] == [1, 2, 3]
    for a, b in zip(single.history, double.history):
        for key in PPO_CURVE:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert single.history[-1]["objective/kl"] != 0.0  # the policy moved
    a, b = weights(one, "ppo"), weights(two, "ppo")
    assert sorted(a) == sorted(b)
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    from safetensors.torch import load_file

    critics = [load_file(list_checkpoints([p for p in Paths(root).checkpoints("ppo").iterdir()
                                           if p.name.endswith("-finished")][0])[-1] / "value" / "model.safetensors")
               for root in (one, two)]  # the critic of the last checkpoint, whole
    assert sorted(critics[0]) == sorted(critics[1])
    for name, tensor in critics[0].items():
        torch.testing.assert_close(critics[1][name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_checkpoints_resume_across_sharded_and_one_process_runs(world, tmp_path):
    """A checkpoint of a 2-process FSDP run resumes in one process, and one of a one-process run
    resumes sharded over 2: both end on the weights of the uninterrupted run."""
    params = {**PARAMS, "sft": {**PARAMS["sft"], "fsdp": True, "checkpoint_every": 2}}  # steps 2, 4, 5
    roots = {name: tmp_path / name for name in ("whole", "sharded-first", "sharded-after")}
    for root in roots.values():
        shutil.copytree(world, root)
        (root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config("sft", roots["whole"] / "params.yaml")
    STAGES["sft"].run(cfg, Paths(roots["whole"]))  # one process: fsdp has nothing to shard over
    # 2 sharded processes up to step 4, then one process
    run_in_processes("sft", str(roots["sharded-first"] / "params.yaml"), str(roots["sharded-first"]), 2)
    (kept,) = as_if_killed(Paths(roots["sharded-first"]).checkpoints("sft"))
    assert kept.name == "step-00000004"
    resumed = STAGES["sft"].run(cfg, Paths(roots["sharded-first"]))
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4, 5]  # 1-4 from the checkpoint
    # one process up to step 4, then 2 sharded processes
    STAGES["sft"].run(cfg, Paths(roots["sharded-after"]))
    as_if_killed(Paths(roots["sharded-after"]).checkpoints("sft"))
    run_in_processes("sft", str(roots["sharded-after"] / "params.yaml"), str(roots["sharded-after"]), 2)
    expected = weights(roots["whole"], "sft")
    for name in ("sharded-first", "sharded-after"):
        got = weights(roots[name], "sft")
        for key, tensor in expected.items():
            torch.testing.assert_close(got[key], tensor, rtol=1e-4, atol=1e-5, msg=f"{name} {key}")
