"""A stage killed with SIGKILL and run again ends with the weights of an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from unittest.mock import Mock

import pytest
import torch
from safetensors.torch import load_file

import rlhf.stages.sft
from rlhf.config.sft import SFTConfig
from rlhf.paths import Paths
from rlhf.stages.sft import run_sft
from rlhf.train.checkpoint import list_checkpoints
from rlhf.train.toy import make_toy_world
from tests.checkpoints import as_if_killed

CFG = dict(n_layer=1, n_head=2, n_embd=32, n_positions=64, max_seq_len=64, packing=False, batch_size=8,
           micro_batch_size=4, warmup_steps=5, max_steps=120, checkpoint_every=10, keep_checkpoints=2,
           sample_count=0, eval_examples=8)
SCRIPT = (
    "import json, sys; from pathlib import Path; from rlhf.config.sft import SFTConfig; "
    "from rlhf.paths import Paths; from rlhf.stages.sft import run_sft; "
    "run_sft(SFTConfig(**json.loads(sys.argv[2])), Paths(Path(sys.argv[1])))"
)


def checkpoints(paths: Paths) -> list[str]:
    """Complete SFT checkpoints, as `<inputs digest>/step-N` (one digest folder per set of inputs)."""
    base = paths.checkpoints("sft")
    return sorted(f"{c.parent.name}/{c.name}" for root in (base.iterdir() if base.is_dir() else [])
                  for c in list_checkpoints(root))


def latest(paths: Paths):
    names = checkpoints(paths)
    return paths.checkpoints("sft") / max(names, key=lambda n: int(n.split("-")[-1])) if names else None


def test_sft_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path):
    # 1. the uninterrupted reference run
    ref = make_toy_world(tmp_path / "ref")
    run_sft(SFTConfig(**CFG), ref)
    # 2. the same inputs in a second folder; train in a subprocess and SIGKILL it after a checkpoint
    killed = Paths(tmp_path / "killed")
    shutil.copytree(ref.data, killed.data)
    shutil.copytree(ref.tokenizer, killed.tokenizer)
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}  # as in this process
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(killed.root), json.dumps(CFG)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while latest(killed) is None and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the training finished before it could be killed"
    at_kill = latest(killed)
    assert at_kill is not None and not (killed.sft / "model").exists()
    assert int(at_kill.name.split("-")[1]) < CFG["max_steps"]
    # 3. run again after clearing the stage's outputs (as `dvc repro` does): it resumes from the
    #    checkpoint, which lives outside them, and must end where the reference ended
    shutil.rmtree(killed.sft, ignore_errors=True)
    out = run_sft(SFTConfig(**CFG), killed)
    a = load_file(str(ref.sft / "model" / "model.safetensors"))
    b = load_file(str(killed.sft / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    ref_history = json.loads((latest(ref) / "trainer_state.json").read_text())
    assert [h["step"] for h in out.history] == [h["step"] for h in ref_history["history"]]


def test_rerun_after_completion_trains_afresh_to_the_same_weights(tmp_path, monkeypatch):
    """A finished run retires its checkpoints: running the stage again (changed code, `dvc repro -f`)
    trains from step 0 and, on CPU, lands on the same weights."""
    paths = make_toy_world(tmp_path)
    cfg = SFTConfig(**{**CFG, "max_steps": 6, "warmup_steps": 1, "checkpoint_every": 3})
    first = run_sft(cfg, paths)
    (digest,) = {n.split("/")[0] for n in checkpoints(paths)}
    assert digest.endswith("-finished")
    assert checkpoints(paths) == [f"{digest}/step-00000003", f"{digest}/step-00000006"]
    weights = load_file(str(paths.sft / "model" / "model.safetensors"))
    steps = Mock(wraps=rlhf.stages.sft.optimizer_step)
    monkeypatch.setattr(rlhf.stages.sft, "optimizer_step", steps)
    second = run_sft(cfg, paths)
    assert steps.call_count == 6
    again = load_file(str(paths.sft / "model" / "model.safetensors"))
    assert all(torch.equal(weights[k], again[k]) for k in weights)

    def learning(history):  # the history without its timings
        return [{k: v for k, v in h.items() if not k.startswith("throughput/")} for h in history]

    assert learning(second.history) == learning(first.history)


def test_changed_config_drops_checkpoints(tmp_path, monkeypatch):
    paths = make_toy_world(tmp_path)
    run_sft(SFTConfig(**{**CFG, "max_steps": 6, "warmup_steps": 1, "checkpoint_every": 3}), paths)
    as_if_killed(paths.checkpoints("sft"))  # a live step-3 checkpoint
    steps = Mock(wraps=rlhf.stages.sft.optimizer_step)
    monkeypatch.setattr(rlhf.stages.sft, "optimizer_step", steps)
    with pytest.warns(UserWarning, match="another config"):
        changed = run_sft(SFTConfig(**{**CFG, "max_steps": 4, "warmup_steps": 1, "checkpoint_every": 4}), paths)
    assert steps.call_count == 4 and [h["step"] for h in changed.history][-1] == 4


def test_changed_inputs_do_not_resume(tmp_path, monkeypatch):
    """Same config, other training data: the old checkpoints belong to another run and are dropped."""
    paths = make_toy_world(tmp_path)
    cfg = SFTConfig(**{**CFG, "max_steps": 6, "warmup_steps": 1, "checkpoint_every": 3})
    run_sft(cfg, paths)
    (live,) = as_if_killed(paths.checkpoints("sft"))
    lines = paths.sft_train.read_text(encoding="utf-8").splitlines(keepends=True)
    paths.sft_train.write_text("".join(lines[1:]), encoding="utf-8")  # one demonstration fewer
    steps = Mock(wraps=rlhf.stages.sft.optimizer_step)
    monkeypatch.setattr(rlhf.stages.sft, "optimizer_step", steps)
    run_sft(cfg, paths)
    assert steps.call_count == 6, "resumed a checkpoint trained on other data"
    assert not live.exists()
