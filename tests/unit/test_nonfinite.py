"""Divergence is never silent: the pure check, `optimizer_step` refusing a non-finite update, and
`TrainingRun.guard` stopping the run or counting the skip (saved with the checkpoints)."""

import math

import pytest
import torch
from safetensors.torch import save_file

from rlhf.config.sft import SFTConfig
from rlhf.train import build_optimizer, build_scheduler, make_accelerator, optimizer_step
from rlhf.train.loop import TrainingRun
from rlhf.train.optim import NonFiniteError, check_finite, nonfinite

NAN, INF = float("nan"), float("inf")


def test_nonfinite_keeps_the_bad_entries_in_order():
    assert nonfinite({"loss": 0.5, "grad_norm": 3.0}) == {}
    bad = nonfinite({"a": -INF, "loss": 1e30, "grad_norm": NAN})
    assert list(bad) == ["a", "grad_norm"] and bad["a"] == -INF and math.isnan(bad["grad_norm"])


def test_check_finite_passes_skips_or_stops_with_the_users_message():
    assert check_finite("sft", 3, {"loss": 2.0, "grad_norm": 1e12}) is True
    assert check_finite("sft", 3, {"loss": 2.0, "grad_norm": NAN}, "skip", kept_step=2) is False
    with pytest.raises(NonFiniteError) as err:
        check_finite("sft", 7, {"loss": 2.0, "grad_norm": NAN}, "stop", kept_step=5)
    assert str(err.value) == ("sft: non-finite grad_norm (nan) at step 7; the last good checkpoint (step 5) is kept, "
                              "no model was written; lower sft.learning_rate or set sft.nonfinite: skip")
    assert isinstance(err.value, ValueError)  # reported like any other bad-input error


def test_check_finite_names_every_bad_quantity_and_the_given_fix():
    with pytest.raises(NonFiniteError, match=(
            r"^ppo: non-finite objective/scores \(nan\), loss \(inf\) at step 1; no checkpoint was written "
            r"before it, no model was written; check the reward model or set ppo.nonfinite: skip$")):
        check_finite("ppo", 1, {"objective/scores": NAN, "loss": INF, "grad_norm/policy": 0.3},
                     fix="check the reward model")


def _toy():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = build_optimizer(model, lr=0.1)
    return model, opt, build_scheduler(opt, total_steps=4, warmup_steps=0, schedule="linear")


def _loss_fn(scale):
    def loss_fn(model, mb, n):
        return scale * model(mb["x"]).pow(2).sum() / n, {}
    return loss_fn


@pytest.mark.parametrize("scale", [NAN, INF])
def test_optimizer_step_does_not_apply_a_non_finite_step_but_advances_the_schedule(scale):
    model, opt, sched = _toy()
    before = [p.detach().clone() for p in model.parameters()]
    mb = [{"x": torch.ones(2, 3)}]
    stats = optimizer_step(model, opt, sched, make_accelerator("no"), mb, _loss_fn(scale), lambda b: 2, 1.0)
    assert not math.isfinite(stats["loss"]) or not math.isfinite(stats["grad_norm"])
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b) and p.grad is None  # weights as they were, gradients dropped
    assert opt.state_dict()["state"] == {}  # AdamW's moments never saw the bad gradient
    assert sched.last_epoch == 1 and stats["lr"] == pytest.approx(0.1)  # step 2 keeps its learning rate
    # the next finite step trains as usual
    optimizer_step(model, opt, sched, make_accelerator("no"), mb, _loss_fn(1.0), lambda b: 2, 1.0)
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


class _Tiny(torch.nn.Linear):
    def save_pretrained(self, path):
        path.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), str(path / "model.safetensors"))


def _run(tmp_path, **cfg):
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    cfg = SFTConfig(max_steps=6, warmup_steps=0, checkpoint_every=2, keep_checkpoints=5, **cfg)
    return TrainingRun(tmp_path / "sft", [data], cfg, make_accelerator("no"))


def test_guard_stops_naming_the_newest_checkpoint(tmp_path):
    run, model = _run(tmp_path), _Tiny(2, 1)
    opt = build_optimizer(model, 1e-2)
    run.restore({"model": opt}, {})
    with pytest.raises(NonFiniteError, match=r"^sft: .* at step 1; no checkpoint was written before it"):
        run.guard(1, {"loss": NAN})
    for step in (1, 2, 3):
        assert run.guard(step, {"loss": 1.0, "grad_norm": 0.5})
        run.checkpoint(step, 6, {"": model}, {"model": opt}, {}, {"history": []})
    with pytest.raises(NonFiniteError, match=r"^sft: non-finite grad_norm \(inf\) at step 4; the last good "
                                             r"checkpoint \(step 2\) is kept"):
        run.guard(4, {"loss": 1.0, "grad_norm": INF})
    assert run.skipped == 0


def test_guard_counts_skips_and_the_count_resumes_with_the_checkpoint(tmp_path):
    run, model = _run(tmp_path, nonfinite="skip"), _Tiny(2, 1)
    opt = build_optimizer(model, 1e-2)
    run.restore({"model": opt}, {})
    assert run.guard(1, {"loss": NAN}) is False and run.guard(2, {"loss": 1.0}) is True
    run.checkpoint(2, 6, {"": model}, {"model": opt}, {}, {"history": []})
    assert run.guard(3, {"grad_norm": NAN}) is False and run.skipped == 2

    again = _run(tmp_path, nonfinite="skip")  # killed after step 3: resumes the step-2 checkpoint
    state = again.restore({"model": build_optimizer(model, 1e-2)}, {})
    assert state["step"] == 2 and again.skipped == 1 and again.saved_step == 2
