"""benchmarks/step_profile.py: the op-kind split of profiled steps. A fake event list checks the
window and the kinds; the project side of SFT and reward on the tiny size checks the real split,
whose matmul FLOPs must be the benchmark's own count of the step's model FLOPs."""

from types import SimpleNamespace

import pytest

from benchmarks import step_profile
from benchmarks.trl_peer.op_profile import KINDS, MARK, OTHER, kind, split


def event(name: str, start: float, self_us: float, flops: float = 0.0, shapes: list | None = None):
    return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start), self_cpu_time_total=self_us,
                           flops=flops, input_shapes=shapes or [])


def test_split_counts_only_the_timed_window_by_kind():
    events = [
        event("aten::mm", 150, 999, 1e9), event(MARK, 500, 0),  # warm-up step 1: outside the window
        event("aten::gelu", 700, 999), event(MARK, 1000, 0),  # warm-up step 2, its end starts the window
        event("aten::mm", 1100, 300, 6e9), event("aten::addmm", 1500, 100, 2e9),
        event("aten::addmm_", 1600, 100, 0.0, [[64, 32], [64, 16], [16, 32], [], []]),  # 2 * 64 * 32 * 16 FLOPs
        event("aten::_scaled_dot_product_flash_attention_for_cpu", 1700, 200),
        event("aten::_fused_adamw_", 1950, 50), event("aten::gelu", 2000, 120), event("aten::gelu", 2500, 30),
        event(MARK, 3000, 0),
        event("aten::mm", 3100, 500, 1e9),  # after the last step: outside
    ]
    s = split(events, warmup=2)
    assert s["window"] == pytest.approx(2000e-6) and s["steps"] == 1
    assert s["matmul"] == pytest.approx(500e-6) and s["matmul_flops"] == 8e9 + 2 * 64 * 32 * 16
    assert s["attention"] == pytest.approx(200e-6) and s["optimizer"] == pytest.approx(50e-6)
    assert s["other ops"] == pytest.approx(150e-6) and s[OTHER + "aten::gelu"] == pytest.approx(150e-6)
    assert sum(s[k] for k in KINDS) == pytest.approx(s["window"])  # outside ops: the rest of the window
    with pytest.raises(AssertionError):
        split(events[:4], warmup=2)  # no timed step


def test_kinds():
    assert [kind(n) for n in ("aten::addmm_", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                              "aten::_fused_adamw_", "Optimizer.step#AdamW.step", "aten::gelu_backward")] == \
        ["matmul", "matmul", "attention", "optimizer", "optimizer", "other ops"]


def test_project_steps_split_and_count_their_matmul_flops():
    lines: list[str] = []
    splits = step_profile.main(["--sizes", "tiny", "--trainers", "sft,reward,dpo", "--steps", "1", "--threads", "1"],
                               with_trl=False, say=lines.append)
    assert set(splits) == {(t, "tiny", "project") for t in ("sft", "reward", "dpo")}
    for (trainer, _, _), s in splits.items():
        assert s["window"] > 0 and sum(s[k] for k in KINDS) == pytest.approx(s["window"])
        assert s["matmul"] > 0.2 * s["window"]  # a GPT-2 step is mostly matrix products
        row = [line for line in lines if line.startswith(f"| {trainer} | tiny | project | ")]
        assert len(row) == 2  # the kinds table and the largest other operators
        # the profiler's matmul FLOPs against the model FLOPs the benchmark counts for the step (6 N per
        # trained token, 2 N per forward-only one, less the LM head and last MLP where they do not run):
        # the count's N also holds biases and norm weights, 0.3% of the tiny GPT-2's, which no matmul uses
        assert s["matmul_flops"] == pytest.approx(s["counted_flops"], rel=0.01), trainer


def test_help_describes_the_profile_not_the_timing(capsys):
    with pytest.raises(SystemExit) as stop:
        step_profile.main(["--help"])
    assert stop.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Where each side's training step spends its time" in out
    assert "speed, MFU, memory, step-1 loss" not in out  # trl_compare.py's own line
