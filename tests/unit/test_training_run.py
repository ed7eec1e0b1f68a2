"""TrainingRun, the loop scaffolding of every trainer: start, periodic and final checkpoints,
resume from the newest, and retire on finish."""

import torch
from safetensors.torch import save_file

from rlhf.config.sft import SFTConfig
from rlhf.stage import SKIPPED
from rlhf.train import build_optimizer, build_scheduler, make_accelerator
from rlhf.train.loop import TrainingRun


class _Tiny(torch.nn.Linear):
    def save_pretrained(self, path):
        path.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), str(path / "model.safetensors"))


def _objects(model):
    opt = build_optimizer(model, 1e-2)
    return {"model": opt}, {"model": build_scheduler(opt, total_steps=5, warmup_steps=0)}


def test_checkpoints_every_k_and_at_the_end_then_resume_and_retire(tmp_path):
    acc, cfg = make_accelerator("no"), SFTConfig(max_steps=5, warmup_steps=0, checkpoint_every=2, keep_checkpoints=5)
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    run = TrainingRun(tmp_path / "ckpt", [data], cfg, acc)
    assert run.resume_dir is None
    model = _Tiny(2, 1)
    opts, scheds = _objects(model)
    assert run.restore(opts, scheds) == {"step": 0, "history": []}
    for step in range(1, 6):
        run.checkpoint(step, 5, {"": model}, opts, scheds, {"history": [step]})
    assert sorted(p.name for p in run.root.iterdir()) == ["step-00000002", "step-00000004", "step-00000005"]

    again = TrainingRun(tmp_path / "ckpt", [data], cfg, acc)  # a rerun after a kill resumes the newest
    assert again.resume_dir.name == "step-00000005"
    assert again.restore(*_objects(model))["step"] == 5

    out = tmp_path / "stage" / "model"
    out.parent.mkdir()
    (out.parent / SKIPPED).write_text("old\n")
    again.finish(out, model)
    assert (out / "model.safetensors").is_file() and (out / "stage_config.json").is_file()
    assert not (out.parent / SKIPPED).exists()
    assert TrainingRun(tmp_path / "ckpt", [data], cfg, acc).resume_dir is None  # retired: afresh
