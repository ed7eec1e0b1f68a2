"""benchmarks/last_mlp.py: the project's steps with the last MLP at the read positions and without,
on the tiny size, one round: a row per trainer, the same step-1 loss both ways, the hooks restored;
"plain" hooks no MLP and "read" does."""

import sys

import pytest

import rlhf.stages.ppo as ppo_stage
import rlhf.train.last_mlp as last_mlp_module
from benchmarks import last_mlp as bench


def test_both_modes_run_and_agree_on_the_first_loss(monkeypatch, capsys):
    scan, sampler = last_mlp_module._scan, ppo_stage.generate
    monkeypatch.setattr(sys, "argv", ["last_mlp.py", "--trainers", "sft,reward", "--sizes", "tiny",
                                      "--rounds", "1", "--steps", "1"])
    bench.main()
    out = capsys.readouterr().out
    assert last_mlp_module._scan is scan and ppo_stage.generate is sampler
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:2] in
            (["sft", "tiny"], ["reward", "tiny"])}
    assert rows.keys() == {"sft", "reward"}
    for cells in rows.values():
        read, plain, diff = float(cells[2]), float(cells[3]), float(cells[-1])
        assert read > 0 and plain > 0
        assert diff < 1e-5  # the same step, its sums in another order


def test_unknown_trainer_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["last_mlp.py", "--trainers", "rlhf"])
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert stop.value.code == 2
    assert "unknown trainer ['rlhf']" in capsys.readouterr().err


def test_plain_hooks_no_mlp_and_read_does(monkeypatch, tmp_path):
    from benchmarks.trl_peer import fixtures as fx
    from benchmarks.trl_peer.settings import WARMUP_STEPS

    hooked = []
    real = last_mlp_module._hooked
    monkeypatch.setattr(last_mlp_module, "_hooked", lambda *args: hooked.append(1) or real(*args))
    fx.write_fixtures(tmp_path, ["tiny"], WARMUP_STEPS + 1)
    bench.run("reward", "tiny", tmp_path, 1, "plain")
    assert hooked == []
    bench.run("reward", "tiny", tmp_path, 1, "read")
    assert len(hooked) == WARMUP_STEPS + 1  # one reward forward per step
