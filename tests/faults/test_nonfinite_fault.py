"""A NaN gradient at a seeded step of a real trainer: the stage stops naming stage, step and
quantity, keeps its last good checkpoint and writes no model.

tests/smoke/test_nonfinite_smoke.py makes the loss itself NaN in every trainer; here the loss stays
finite and one parameter's gradient turns NaN (as an overflow inside a layer's backward would), so
only the gradient norm can tell.
"""

import random

import pytest
import torch

import rlhf.stages.reward
from rlhf.config.reward import RewardConfig
from rlhf.reward import RewardModel
from rlhf.stages.reward import run_reward
from rlhf.train.checkpoint import checkpoint_problem, list_checkpoints
from rlhf.train.optim import NonFiniteError
from tests.faults.projects import fresh, hidden

pytestmark = pytest.mark.faults

SEED = 20240611
RM = dict(max_steps=8, batch_size=8, micro_batch_size=4, warmup_steps=0, learning_rate=2e-3, checkpoint_every=2,
          keep_checkpoints=2, log_every=1, max_seq_len=64, norm_examples=8)


def nan_gradient_at(monkeypatch, bad_step: int) -> list[float]:
    """Optimizer step `bad_step` (1-based) of the reward stage gets a NaN gradient for its first
    trainable parameter, through the real backward. Returns the losses of the steps run."""
    real, losses = rlhf.stages.reward.optimizer_step, []

    def step(model, *args):
        param = next(p for p in model.parameters() if p.requires_grad)
        hook = param.register_hook(lambda g: torch.full_like(g, float("nan"))) if len(losses) + 1 == bad_step else None
        try:
            stats = real(model, *args)
        finally:
            if hook is not None:
                hook.remove()
        losses.append(stats["loss"])
        return stats

    monkeypatch.setattr(rlhf.stages.reward, "optimizer_step", step)
    return losses


def test_a_nan_gradient_stops_the_stage_with_its_last_good_checkpoint_and_no_model(world, tmp_path, monkeypatch):
    bad = random.Random(SEED).randint(RM["checkpoint_every"] + 1, RM["max_steps"])
    kept = (bad - 1) // RM["checkpoint_every"] * RM["checkpoint_every"]  # the newest checkpoint before it
    paths = fresh(world, tmp_path, ["data", "tokenizer", "sft"])
    losses = nan_gradient_at(monkeypatch, bad)
    with pytest.raises(NonFiniteError) as err:
        run_reward(RewardConfig(**RM), paths)
    # 1. the message names the stage, the step and the one quantity that went bad (the loss did not)
    assert str(err.value) == (f"reward: non-finite grad_norm (nan) at step {bad}; the last good checkpoint "
                              f"(step {kept}) is kept, no model was written; lower reward.learning_rate or set "
                              "reward.nonfinite: skip")
    assert len(losses) == bad and all(torch.isfinite(torch.tensor(losses)))
    # 2. the last good checkpoint is the newest, intact, finite, and a rerun would resume it
    (root,) = paths.checkpoints("reward").iterdir()
    assert not root.name.endswith("-finished")  # not retired
    newest = list_checkpoints(root)[-1]
    assert newest.name == f"step-{kept:08d}" and checkpoint_problem(newest) is None
    model = RewardModel.from_pretrained(newest)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # 3. no model, not even half of one
    assert not (paths.reward / "model").exists()
    assert hidden(paths.reward) == [] and hidden(paths.checkpoints("reward")) == []
