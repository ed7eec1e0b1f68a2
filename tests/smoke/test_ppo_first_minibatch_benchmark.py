"""benchmarks/ppo_first_minibatch.py: the project's PPO iteration with the first minibatch's forward
as the evaluation pass and without, on the tiny size, one round: the same first loss both ways,
`FirstMinibatch.plan` and the sampler restored; "fused" runs the first minibatch's forward at
every iteration and "plain" never."""

import sys

import rlhf.stages.ppo as ppo_stage
from benchmarks import ppo_first_minibatch as bench
from rlhf.stages.ppo_update import FirstMinibatch


def test_both_modes_run_and_agree_on_the_first_loss(monkeypatch, capsys):
    plan, sampler = FirstMinibatch.__dict__["plan"], ppo_stage.generate
    monkeypatch.setattr(sys, "argv", ["ppo_first_minibatch.py", "--sizes", "tiny", "--rounds", "1", "--steps", "1"])
    bench.main()
    out = capsys.readouterr().out
    assert FirstMinibatch.__dict__["plan"] is plan and ppo_stage.generate is sampler
    (cells,) = [line.split() for line in out.splitlines() if line.split()[:2] == ["ppo", "tiny"]]
    fused, plain, diff = float(cells[2]), float(cells[3]), float(cells[-1])
    assert fused > 0 and plain > 0
    assert diff < 1e-5


def test_fused_runs_the_first_forward_and_plain_does_not(monkeypatch, tmp_path):
    from benchmarks.trl_peer import fixtures as fx
    from benchmarks.trl_peer.settings import WARMUP_STEPS

    runs = []
    real = FirstMinibatch.run
    monkeypatch.setattr(FirstMinibatch, "run", lambda self, batch: runs.append(1) or real(self, batch))
    fx.write_fixtures(tmp_path, ["tiny"], WARMUP_STEPS + 1)
    bench.run("ppo", "tiny", tmp_path, 1, "plain")
    assert runs == []
    bench.run("ppo", "tiny", tmp_path, 1, "fused")
    assert len(runs) == WARMUP_STEPS + 1  # one per iteration
