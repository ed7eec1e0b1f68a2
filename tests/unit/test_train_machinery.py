import json
import random

import pytest
import torch

from rlhf.config.sft import SFTConfig
from rlhf.train import (
    BatchOrder,
    build_optimizer,
    build_scheduler,
    collate_pairs,
    find_resumable,
    latest_checkpoint,
    load_checkpoint,
    lr_factor,
    make_accelerator,
    rng_state,
    save_checkpoint,
    set_rng_state,
    shard_and_split,
)


def test_batch_order_is_a_pure_function_of_seed_and_step():
    order = BatchOrder(n=10, batch_size=4, seed=3)
    first_epochs = [i for s in range(5) for i in order.batch(s)]  # 20 items = 2 epochs
    assert sorted(first_epochs[:10]) == list(range(10)) and sorted(first_epochs[10:]) == list(range(10))
    assert first_epochs[:10] != first_epochs[10:]  # reshuffled each epoch
    assert BatchOrder(10, 4, 3).batch(3) == order.batch(3)  # a fresh object (a resumed run) agrees
    assert BatchOrder(10, 4, 4).batch(0) != order.batch(0)
    assert order.epoch(5) == 2.0


def test_batch_order_by_length_keeps_epochs_whole_and_cuts_padding():
    lengths = [random.Random(i).randint(5, 200) for i in range(1000)]
    plain, grouped = BatchOrder(1000, 8, 0), BatchOrder(1000, 8, 0, lengths)
    first = [i for s in range(125) for i in grouped.batch(s)]  # 125 batches = one epoch
    assert sorted(first) == list(range(1000))  # every item once per epoch, as without grouping
    assert sorted(i for s in range(125, 250) for i in grouped.batch(s)) == list(range(1000))
    assert BatchOrder(1000, 8, 0, lengths).batch(130) == grouped.batch(130)  # a pure function of (seed, step)

    def padded(order: BatchOrder) -> int:  # positions a step runs: every row padded to its batch's longest
        return sum(8 * max(lengths[i] for i in order.batch(s)) for s in range(125))
    assert padded(grouped) < 0.6 * padded(plain)  # sum(lengths) is about 0.7 of the plain figure
    # a group is 50 batches of the epoch's permutation: the items that meet are those of one group
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    assert sorted(first[:400]) == sorted(perm[:400])
    assert first[:400] != sorted(perm[:400], key=lambda i: -lengths[i])  # batches in random order, not longest first
    assert all(max(lengths[i] for i in first[k: k + 8]) - min(lengths[i] for i in first[k: k + 8]) <= 12
               for k in range(0, 400, 8))  # 400 lengths in 5..200: neighbours in sorted order are close


def test_batch_order_by_length_leaves_a_partial_batch_last():
    order = BatchOrder(10, 4, 1, lengths=list(range(10)))
    epoch = [i for s in range(3) for i in order.batch(s)][:10]  # 2.5 batches: the half one closes the epoch
    assert sorted(epoch) == list(range(10)) and sorted(epoch[8:]) == [0, 1]  # the two shortest
    assert sorted(epoch[:8]) == list(range(2, 10))


def test_shard_and_split_divides_the_global_batch():
    idx = list(range(8))
    assert shard_and_split(idx, 2) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert shard_and_split(idx, 2, process_index=1, num_processes=2) == [[1, 3], [5, 7]]
    with pytest.raises(AssertionError):
        shard_and_split(idx, 3)


def test_preference_batch_convention():
    batch = collate_pairs([[5, 6], [7]], [[8], [9, 9, 9]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 0], [7, 0, 0], [8, 0, 0], [9, 9, 9]]  # [c0, c1, r0, r1]
    assert batch["attention_mask"].sum(1).tolist() == [2, 1, 1, 3]


def test_schedule_warmup_then_decay():
    assert lr_factor(0, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine", 0.1) == pytest.approx(0.55)  # cosine midpoint
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(80, 100, 10, "constant", 0.0) == 1.0


def test_rng_state_roundtrip():
    state = rng_state()
    a = (random.random(), torch.rand(3))
    set_rng_state(state)
    b = (random.random(), torch.rand(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])


class _Linear(torch.nn.Linear):
    def save_pretrained(self, path):  # stands in for a Hugging Face model
        from safetensors.torch import save_file

        save_file(self.state_dict(), str(path / "model.safetensors"))


def test_checkpoint_roundtrip_keeps_last_k_and_checks_config(tmp_path):
    acc = make_accelerator("no")
    model = _Linear(3, 2)
    opt = build_optimizer(model, 1e-2)
    sched = build_scheduler(opt, total_steps=10, warmup_steps=2)
    cfg = SFTConfig(max_steps=10, warmup_steps=2)
    for step in (1, 2, 3):
        model(torch.ones(1, 3)).sum().backward()
        opt.step(), sched.step(), opt.zero_grad()
        save_checkpoint(tmp_path, step, acc, {"": model, "copy": model}, {"model": opt}, {"model": sched}, cfg,
                        {"history": [{"step": step}]}, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000003"]
    ckpt = latest_checkpoint(tmp_path)
    assert json.loads((ckpt / "stage_config.json").read_text()) == cfg.model_dump(mode="json")
    opt2 = build_optimizer(model, 1e-2)
    sched2 = build_scheduler(opt2, total_steps=10, warmup_steps=2)
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "copy" / "model.safetensors").is_file()
    state = load_checkpoint(ckpt, {"model": opt2}, {"model": sched2})
    assert state["step"] == 3 and state["history"] == [{"step": 3}]
    assert sched2.state_dict()["last_epoch"] == 3 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert find_resumable(tmp_path, cfg) == ckpt
    with pytest.warns(UserWarning, match="another config"):
        assert find_resumable(tmp_path, SFTConfig(max_steps=11, warmup_steps=2)) is None
    assert not tmp_path.exists()


def test_inputs_digest_follows_content_and_names_not_location(tmp_path):
    from rlhf.train.checkpoint import inputs_digest

    def make(root, text="a\n", name="w.bin"):
        (root / "model").mkdir(parents=True)
        (root / "model" / name).write_text(text)
        (root / "data.jsonl").write_text("{}\n")
        return [root / "data.jsonl", root / "model"]

    base = inputs_digest(make(tmp_path / "one"))
    assert inputs_digest(make(tmp_path / "two")) == base  # same files elsewhere
    assert inputs_digest(make(tmp_path / "three", text="b\n")) != base  # changed bytes
    assert inputs_digest(make(tmp_path / "four", name="v.bin")) != base  # renamed file
    assert inputs_digest([tmp_path / "absent"]) != inputs_digest([tmp_path / "other"])  # missing: by name


def test_run_checkpoint_root_drops_folders_of_other_inputs(tmp_path):
    from rlhf.train.checkpoint import run_checkpoint_root

    data = tmp_path / "data.jsonl"
    data.write_text("1\n")
    first = run_checkpoint_root(tmp_path / "ckpt", [data])
    (first / "step-00000001").mkdir(parents=True)
    assert run_checkpoint_root(tmp_path / "ckpt", [data]) == first and first.is_dir()  # same inputs: kept
    data.write_text("2\n")
    second = run_checkpoint_root(tmp_path / "ckpt", [data])
    assert second != first and not first.exists()


def test_a_corrupt_checkpoint_is_skipped_for_the_one_before_it(tmp_path):
    acc = make_accelerator("no")
    model = _Linear(3, 2)
    opt = build_optimizer(model, 1e-2)
    cfg = SFTConfig(max_steps=10, warmup_steps=2)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, acc, {"": model}, {"model": opt}, {}, cfg, {}, keep_last=3)
    # step 3: its weights truncated (a write cut short by a full disk, a bad copy)
    weights = tmp_path / "step-00000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    with pytest.warns(UserWarning, match=r"step-00000003 is corrupt: model.safetensors does not match its checksum"):
        assert find_resumable(tmp_path, cfg) == tmp_path / "step-00000002"
    assert not (tmp_path / "step-00000003").exists()
    # step 2: a file gone
    (tmp_path / "step-00000002" / "optimizer.pt").unlink()
    with pytest.warns(UserWarning, match="optimizer.pt is missing"):
        assert find_resumable(tmp_path, cfg) == tmp_path / "step-00000001"


def test_fused_adamw_steps_like_the_unfused_one():
    """`build_optimizer` takes AdamW's fused kernel on the CPU; ten steps of it leave the weights
    where the per-parameter implementation leaves them, to float rounding."""
    from rlhf.train.optim import fusable

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    twin = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    twin.load_state_dict(model.state_dict())
    assert fusable(list(model.parameters()))
    fused = build_optimizer(model, 1e-2, weight_decay=0.1)
    assert fused.defaults["fused"]
    plain = torch.optim.AdamW([{"params": [p for p in twin.parameters() if p.dim() >= 2], "weight_decay": 0.1},
                               {"params": [p for p in twin.parameters() if p.dim() < 2], "weight_decay": 0.0}],
                              lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    x = torch.randn(64, 16)
    for _ in range(10):
        for net, opt in ((model, fused), (twin, plain)):
            net(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_embedded_gpt2_gelu_is_gpt2s_tanh_gelu():
    """The embedded GPT-2 runs GELU's tanh approximation as one fused kernel
    (`gelu_pytorch_tanh`); it is GPT-2's own `gelu_new`, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),
    to float rounding, values and gradients."""
    import math

    from transformers.activations import ACT2FN

    from rlhf.tokenizer import train_tokenizer
    from rlhf.train import build_gpt2

    tok = train_tokenizer(["Human: hi\n\nAssistant: hello there"] * 4, vocab_size=300, min_frequency=1)
    assert build_gpt2(tok, 1, 2, 16, 32, seed=0).config.activation_function == "gelu_pytorch_tanh"
    x = torch.linspace(-6, 6, 2001, dtype=torch.float32, requires_grad=True)
    closed = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    fused = ACT2FN["gelu_pytorch_tanh"](x)
    torch.testing.assert_close(fused, closed, rtol=1e-6, atol=1e-6)
    (g_closed,) = torch.autograd.grad(closed.sum(), x)
    (g_fused,) = torch.autograd.grad(fused.sum(), x)
    torch.testing.assert_close(g_fused, g_closed, rtol=1e-5, atol=2e-6)  # tails: gradients of ~1e-6
