"""The compute task gives the evaluate stage the ppo section of the same params file, so that the
proxy score it reports is PPO's (rlhf.stages.evaluate.proxy_missing_eos_score)."""

import logging

import tasks.stages
from rlhf.stage import StageOutput


def test_compute_passes_the_ppo_section_to_evaluate_only(tmp_path, monkeypatch):
    calls = []

    def stage_fn(cfg, paths, **extra):
        calls.append((cfg, extra))
        return StageOutput(metrics={})

    monkeypatch.setattr(tasks.stages, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(tasks.stages, "library_function", lambda stage: stage_fn)
    params = tmp_path / "params.yaml"
    params.write_text("ppo:\n  missing_eos_score: -2.5\nevaluate:\n  seed: 3\ndpo:\n  seed: 4\n")
    tasks.stages.compute.fn("evaluate", str(params), str(tmp_path))
    tasks.stages.compute.fn("dpo", str(params), str(tmp_path))
    (evaluate_cfg, evaluate_extra), (dpo_cfg, dpo_extra) = calls
    assert evaluate_cfg.seed == 3 and set(evaluate_extra) == {"ppo"}
    assert evaluate_extra["ppo"].missing_eos_score == -2.5
    assert dpo_cfg.seed == 4 and dpo_extra == {}
