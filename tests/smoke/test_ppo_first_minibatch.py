"""The update's first minibatch as step 2 for its rows (`rlhf.stages.ppo_update.FirstMinibatch`):
the same frozen batch and the same update as the plain path (an evaluation pass over every row)
within float tolerance, a ratio of exactly 1 on the first minibatch, and one teacher-forced
policy and critic pass fewer over those rows."""

import pytest
import torch

from rlhf.config.ppo import PPOConfig
from rlhf.reward import RewardModel
from rlhf.stages.ppo import make_critic, make_experience
from rlhf.stages.ppo_update import FirstMinibatch, minibatch_order, ppo_update
from rlhf.train import load_causal_lm, load_tokenizer, make_accelerator
from rlhf.train.runtime import cpu_has_bf16
from rlhf.train.toy import sft_rows
from tests.worlds import rl_world

FROZEN = ("logprobs", "values", "advantages", "returns")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return rl_world(tmp_path_factory.mktemp("first"))


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _iteration(world, cfg, fused, calls=None, precision="no"):
    """One PPO iteration (steps 1-5) from the SFT policy and the reward model's critic, as `run_ppo`
    runs it under `precision` (policy and critic prepared, the rollout under the same autocast);
    `calls` collects the batch size of every policy forward."""
    tok = load_tokenizer(world.sft / "model")
    policy, reference = load_causal_lm(world.sft / "model"), load_causal_lm(world.sft / "model")
    critic = make_critic(world.reward / "model", world.sft / "model", tok, seed=0)
    rm = RewardModel.from_pretrained(world.reward / "model")
    if calls is not None:
        policy.register_forward_pre_hook(
            lambda m, args, kwargs: calls.append((args[0] if args else kwargs["input_ids"]).shape[0]), with_kwargs=True)
    accelerator = make_accelerator(precision)
    policy, critic = accelerator.prepare(policy, critic)
    prompts = [r["prompt"] for r in sft_rows(cfg.rollout_batch_size, seed=5)]
    first = FirstMinibatch.plan(cfg, policy, critic, accelerator, len(prompts), seed=7) if fused else None
    assert (first is not None) == fused
    with accelerator.autocast():
        batch, metrics = make_experience(cfg, accelerator.unwrap_model(policy), reference, accelerator.unwrap_model(critic),
                                         rm, tok, prompts, beta=0.1, seed=0, accelerator=accelerator, first=first)
    frozen = {k: batch[k].clone() for k in FROZEN}
    opt_p = torch.optim.SGD(policy.parameters(), lr=0.1)  # SGD: the step is the gradient itself
    opt_v = torch.optim.SGD(critic.parameters(), lr=0.1)
    stats = ppo_update(cfg, policy, critic, opt_p, opt_v, accelerator, batch, seed=7, first=first)
    return frozen, metrics, stats, _params(policy), _params(critic)


@pytest.mark.parametrize("rollout", [4, 8])  # the whole batch is the first minibatch / half of it
def test_first_minibatch_forward_matches_the_evaluation_pass(world, rollout):
    cfg = PPOConfig(rollout_batch_size=rollout, mini_batch_size=4, micro_batch_size=4, ppo_epochs=2, max_new_tokens=8)
    plain_calls, fused_calls = [], []
    plain = _iteration(world, cfg, fused=False, calls=plain_calls)
    fused = _iteration(world, cfg, fused=True, calls=fused_calls)
    mask = plain[0]["advantages"] != 0  # response tokens
    for key in FROZEN:  # the same frozen batch there
        torch.testing.assert_close(fused[0][key][mask], plain[0][key][mask], atol=1e-5, rtol=1e-5)
    for key in ("objective/kl", "objective/entropy", "val/explained_variance", "objective/scores"):
        assert fused[1][key] == pytest.approx(plain[1][key], abs=1e-5)
    assert len(fused[2]) == len(plain[2]) == cfg.ppo_epochs * rollout // 4
    for a, b in zip(fused[2], plain[2]):
        assert a["loss/policy"] == pytest.approx(b["loss/policy"], abs=1e-5)
        assert a["loss/value"] == pytest.approx(b["loss/value"], abs=1e-5)
    torch.testing.assert_close(fused[3], plain[3], atol=1e-5, rtol=1e-4)  # policy after the update
    torch.testing.assert_close(fused[4], plain[4], atol=1e-5, rtol=1e-4)  # critic after the update
    # the first minibatch runs at pi_old exactly: its ratio is 1 to the bit
    assert fused[2][0]["policy/ratio"] == 1.0 and fused[2][0]["policy/approxkl"] == 0.0
    # rows through the policy in the whole iteration: sampling (the same tokens), the evaluation
    # pass, the update; the fused path's first minibatch runs once for both of the last two
    assert sum(plain_calls) - sum(fused_calls) == cfg.mini_batch_size


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 matmul")
def test_under_bf16_the_first_minibatch_ratio_is_still_exactly_one(world):
    """Under bf16 autocast (the real profile's PPO) the fused path's first ratio stays 1 to the bit,
    and its frozen log-probs stay within bf16 rounding of the plain path's (the first minibatch's
    forward runs over its own trimmed columns, the evaluation pass over the whole batch)."""
    cfg = PPOConfig(rollout_batch_size=8, mini_batch_size=4, micro_batch_size=4, ppo_epochs=2, max_new_tokens=8)
    fp32 = _iteration(world, cfg, fused=True)
    plain = _iteration(world, cfg, fused=False, precision="bf16")
    fused = _iteration(world, cfg, fused=True, precision="bf16")
    mask = plain[0]["advantages"] != 0  # response tokens (the same samples on all three runs)
    assert not torch.equal(fused[0]["logprobs"][mask], fp32[0]["logprobs"][mask]), "autocast did not run in bf16"
    torch.testing.assert_close(fused[0]["logprobs"][mask], plain[0]["logprobs"][mask], atol=0.05, rtol=0)
    assert fused[1]["objective/scores"] == pytest.approx(plain[1]["objective/scores"], abs=1e-6)
    assert fused[2][0]["policy/ratio"] == 1.0 and fused[2][0]["policy/approxkl"] == 0.0


def test_first_minibatch_is_the_one_the_update_draws():
    cfg = PPOConfig(rollout_batch_size=8, mini_batch_size=4, micro_batch_size=4)
    first = FirstMinibatch.plan(cfg, None, None, make_accelerator("no"), 8, seed=11)
    assert torch.equal(first.rows, minibatch_order(8, cfg, torch.Generator().manual_seed(11))[0])
    first.forward = {"logprobs": torch.zeros(4, 1)}
    with pytest.raises(AssertionError, match="another first minibatch"):
        first.take(first.rows.flip(0))


class _Processes:
    """What `FirstMinibatch` uses of an accelerator: P processes, this one the p-th; `gather`
    stacks this process's rows on those `others` hold for the same call (one list per call), as
    process 0 sees them."""

    def __init__(self, num_processes=1, process_index=0, others=()):
        self.num_processes, self.process_index, self.others = num_processes, process_index, list(others)

    def gather(self, t):
        return torch.cat([t, *self.others.pop(0)])


@pytest.mark.parametrize("change", [dict(micro_batch_size=2), dict(lora_r=4, lora_dropout=0.1)])
def test_no_first_minibatch_where_its_forward_is_not_pi_old(change):
    """Several micro-batches would all have to keep their graphs for steps 3-4; LoRA dropout makes
    the update's forward random."""
    cfg = PPOConfig(**{"rollout_batch_size": 8, "mini_batch_size": 4, "micro_batch_size": 4, **change})
    assert FirstMinibatch.plan(cfg, None, None, make_accelerator("no"), 8, seed=0) is None


def test_several_processes_each_take_their_share_of_the_first_minibatch():
    """With P processes the update gives process p the rows mb[p::P]: a micro-batch of 2 covers a
    process's share of a minibatch of 4 in 2 processes (not in 1), and FSDP is left out."""
    cfg = PPOConfig(rollout_batch_size=8, mini_batch_size=4, micro_batch_size=2)
    assert FirstMinibatch.plan(cfg, None, None, _Processes(1), 8, seed=3) is None
    rows = minibatch_order(8, cfg, torch.Generator().manual_seed(3))[0]
    for p in (0, 1):
        first = FirstMinibatch.plan(cfg, None, None, _Processes(2, p), 8, seed=3)
        assert torch.equal(first.rows, rows) and torch.equal(first.mine, rows[p::2])
    assert FirstMinibatch.plan(cfg.model_copy(update={"micro_batch_size": 1}), None, None, _Processes(2), 8, 3) is None
    assert FirstMinibatch.plan(cfg.model_copy(update={"fsdp": True}), None, None, _Processes(2), 8, 3) is None


def test_run_writes_every_process_share_at_its_rows(world, monkeypatch):
    """Process 0 of 2: its own share's forward and the other's (gathered) land at their rows of the
    batch, zero-padded past each share's longest response; the other rows stay as they were."""
    import rlhf.stages.ppo_update as update

    cfg = PPOConfig(rollout_batch_size=8, mini_batch_size=4, micro_batch_size=2)
    n, width = 8, 6
    mask = torch.zeros(n, width)
    for i, length in enumerate((6, 2, 3, 1, 5, 4, 2, 6)):
        mask[i, :length] = 1
    batch = {"mask": mask, **{k: torch.full((n, width), -7.0) for k in update.FORWARD_KEYS}}

    def fake_forward(cfg, policy, critic, batch, idx):  # r = the rows' longest response, as trimmed
        r = int(batch["mask"][idx].sum(dim=1).max())
        return {k: idx[:, None].float() * 10 + j + torch.zeros(len(idx), r, requires_grad=True)
                for j, k in enumerate(update.FORWARD_KEYS)}

    monkeypatch.setattr(update, "micro_forward", fake_forward)
    rows = minibatch_order(n, cfg, torch.Generator().manual_seed(5))[0]
    theirs = rows[1::2]
    other = {k: torch.zeros(2, width) for k in update.FORWARD_KEYS}
    for k, t in fake_forward(cfg, None, None, batch, theirs).items():
        other[k][:, : t.shape[1]] = t.detach()
    procs = _Processes(2, 0, [[other[k]] for k in update.FORWARD_KEYS])
    first = FirstMinibatch(cfg, torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), rows, procs)
    first.run(batch)
    for j, key in enumerate(update.FORWARD_KEYS):
        for row in range(n):
            got = batch[key][row]
            if row in rows.tolist():
                share = rows[0::2] if row in rows[0::2].tolist() else theirs
                r = int(mask[share].sum(dim=1).max())
                assert torch.equal(got[:r], torch.full((r,), float(row * 10 + j))), (key, row)
                assert torch.equal(got[r:], torch.zeros(width - r)), (key, row)
            else:
                assert torch.equal(got, torch.full((width,), -7.0)), (key, row)
    assert torch.equal(first.take(rows[0::2])["logprobs"][:, 0], rows[0::2].float() * 10)
