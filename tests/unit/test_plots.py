"""The figures: PNG files with one panel per curve group or judged figure, and nothing drawn from
data that hold nothing to draw."""

import struct

from rlhf.plots import evaluation_bars, reward_vs_kl, stage_figures, training_curves

HISTORY = [{"step": s, "loss/policy": 1.0 / s, "objective/kl": 0.1 * s, "policy/clipfrac": 0.05, "train/lr": 1e-3}
           for s in (1, 2, 3)]
EVALUATION = {
    policy: {"eval/safety/all": m, "eval/safety/all_low": m - 0.2, "eval/safety/all_high": m + 0.2,
             "eval/kl_to_ref": kl, "eval/kl_to_ref_low": kl * 0.8, "eval/kl_to_ref_high": kl * 1.2,
             "eval/proxy/rm_score": r, "eval/proxy/rm_score_low": r - 0.1, "eval/proxy/rm_score_high": r + 0.1,
             "policy/response_length": 12.0}
    for policy, m, kl, r in (("sft", 3.0, 0.0, 0.0), ("ppo", 3.5, 0.4, 0.6), ("dpo", 3.8, 0.2, 0.4))
}


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_curves_get_one_panel_per_group(tmp_path):
    three = png_size(training_curves(HISTORY, tmp_path / "c.png", "ppo"))  # loss, KL, clip fraction
    one = png_size(training_curves([{k: v for k, v in r.items() if k in ("step", "loss/policy")} for r in HISTORY],
                                   tmp_path / "one.png"))
    assert three[0] > 2.5 * one[0] and three[1] == one[1]
    assert training_curves([], tmp_path / "none.png") is None
    assert training_curves([{"step": 1, "train/lr": 1e-3}], tmp_path / "lr.png") is None  # no group of interest
    assert not (tmp_path / "none.png").exists()


def test_evaluation_bars_and_reward_against_kl(tmp_path):
    bars = png_size(evaluation_bars(EVALUATION, tmp_path / "bars.png"))
    many = {p: {**v, **{f"eval/x{i}{end}": 1.0 for i in range(5) for end in ("", "_low", "_high")}}
            for p, v in EVALUATION.items()}
    grid = png_size(evaluation_bars(many, tmp_path / "grid.png"))  # 8 judged panels: two rows of 4
    assert grid[1] > 1.8 * bars[1] and grid[0] > bars[0]
    assert reward_vs_kl(EVALUATION, tmp_path / "rk.png").is_file()
    assert evaluation_bars({"sft": {"policy/response_length": 1.0}}, tmp_path / "x.png") is None
    assert reward_vs_kl({"sft": {"eval/safety/all": 1.0}}, tmp_path / "y.png") is None


def test_the_figures_of_each_stage(tmp_path):
    assert [p.name for p in stage_figures("ppo", HISTORY, {"loss/policy": 0.1}, tmp_path)] == ["ppo_curves.png"]
    assert [p.name for p in stage_figures("evaluate", [], EVALUATION, tmp_path)] == ["evaluation_bars.png",
                                                                                     "reward_vs_kl.png"]
