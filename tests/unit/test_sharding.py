"""rlhf.train.sharding: FSDP2 over 2 CPU processes (gloo) really shards (each process holds half of
every parameter and AdamW moment), gathers the full weights and optimizer state of a one-process
run, and a checkpoint's whole optimizer state cut back into shards continues the run exactly."""

import os
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlhf.config import load_config
from rlhf.config.base import ConfigError
from rlhf.train.sharding import (
    blocks,
    full_optimizer_state,
    full_weights,
    is_sharded,
    lockstep,
    shard,
    sharded_optimizer_state,
)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def data(rank: int = 0, world: int = 1) -> torch.Tensor:
    ids = torch.randint(0, 40, (4, 12), generator=torch.Generator().manual_seed(1))
    return ids[rank::world]


def train(model, optimizer, steps, rank=0, world=1):
    for _ in range(steps):
        ids = data(rank, world)
        model(input_ids=ids, labels=ids).loss.backward()  # FSDP averages over processes, as DDP does
        optimizer.step()
        optimizer.zero_grad()


# AdamW's eps is large here: the key bias of attention has a gradient of exactly 0 in exact arithmetic,
# and Adam would turn its float noise (which differs between 1 and 2 processes) into steps of size lr


def one_process(steps: int):
    model = tiny_gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-3)
    train(model, optimizer, steps)
    return model, optimizer


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    accelerator = SimpleNamespace(num_processes=world, device=torch.device("cpu"))
    model = shard(tiny_gpt2(), accelerator, fsdp=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-3)
    train(model, optimizer, 2, rank, world)
    local = sum(p.to_local().numel() for p in model.parameters())
    whole = sum(p.numel() for p in model.parameters())
    weights, state = full_weights(model), full_optimizer_state(optimizer)
    # resume: a new sharded model from the full weights, the whole optimizer state cut into shards
    again = tiny_gpt2()
    again.load_state_dict(weights, strict=False)  # the tied LM head follows the embedding
    again = shard(again, accelerator, fsdp=True)
    optimizer2 = torch.optim.AdamW(again.parameters(), lr=1e-2, eps=1e-3)
    optimizer2.load_state_dict(sharded_optimizer_state(optimizer2, state))
    train(again, optimizer2, 1, rank, world)
    resumed = full_weights(again)
    if rank == 0:
        torch.save({"sharded": is_sharded(model), "local": local, "whole": whole, "weights": weights,
                    "state": state["state"], "resumed": resumed}, out)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    out = tmp / "out.pt"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, f"file://{tmp / 'store'}", str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def test_each_process_holds_half_of_the_parameters(two_processes):
    assert two_processes["sharded"]
    assert two_processes["local"] <= two_processes["whole"] // 2 + 64  # half, give or take uneven rows


def test_full_weights_and_optimizer_state_are_those_of_one_process(two_processes):
    model, optimizer = one_process(2)
    expected = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied: kept once
    assert sorted(two_processes["weights"]) == sorted(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(two_processes["weights"][name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    state = optimizer.state_dict()["state"]
    assert sorted(two_processes["state"]) == sorted(state)
    for index, entry in state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            got = two_processes["state"][index][key]
            assert got.shape == entry[key].shape  # whole, not a shard
            torch.testing.assert_close(got, entry[key], rtol=1e-3, atol=1e-7, msg=f"{index} {key}")


def test_a_resumed_sharded_run_continues_the_one_process_run(two_processes):
    model, _ = one_process(3)  # 2 steps, checkpoint, 1 more step = 3 steps in one go
    for name, tensor in model.state_dict().items():
        if name != "lm_head.weight":
            torch.testing.assert_close(two_processes["resumed"][name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    assert not torch.equal(two_processes["resumed"]["transformer.wte.weight"], two_processes["weights"]["transformer.wte.weight"])


def test_unsharded_models_pass_through():
    model = tiny_gpt2()
    accelerator = SimpleNamespace(num_processes=1, device=torch.device("cpu"))
    assert shard(model, accelerator, fsdp=True) is model and not is_sharded(model)
    assert full_weights(model) is None
    optimizer = torch.optim.AdamW(model.parameters())
    state = optimizer.state_dict()
    assert sharded_optimizer_state(optimizer, state) is state


def test_blocks_are_the_transformer_layers_and_a_model_without_any_is_refused():
    assert [type(b).__name__ for b in blocks(tiny_gpt2())] == ["GPT2Block", "GPT2Block"]
    with pytest.raises(ValueError, match="no repeated blocks"):
        blocks(torch.nn.Linear(2, 2))


def test_lockstep_gives_every_process_as_many_batches():
    items = list(range(7))
    per_process = [list(lockstep(items, 2, rank, 3)) for rank in range(3)]
    assert [len(b) for b in per_process] == [2, 2, 2]  # ceil(ceil(7 / 3) / 2)
    assert per_process[0] == [[0, 3], [6]] and per_process[1] == [[1, 4], []] and per_process[2] == [[2, 5], []]
    assert sorted(i for batches in per_process for b in batches for i in b) == items


def test_fsdp_with_lora_is_refused(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("sft:\n  fsdp: true\n  lora_r: 8\nppo:\n  fsdp: true\n")
    with pytest.raises(ConfigError, match="fsdp with LoRA"):
        load_config("sft", params)
    assert load_config("ppo", params).fsdp
