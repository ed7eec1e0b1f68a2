"""One trainer on one side in this process, so that its peak RSS is its own:

    python -m benchmarks.trl_peer.worker SPEC_JSON OUT_JSON

SPEC_JSON: {"side": "project" | "trl", "trainer": ..., "size": ..., "root": fixtures folder,
"warmup": int, "steps": int, "threads": int, "precision": "fp32" | "bf16", "device": "cpu" | "cuda",
"profile": bool (optional: the timed steps under torch.profiler, benchmarks/trl_peer/op_profile.py)}.
Writes the `Result` as JSON to OUT_JSON.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

# offline and quiet before transformers, datasets or TRL are imported
for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                   "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1",
                   "DISABLE_MLFLOW_INTEGRATION": "TRUE", "WANDB_DISABLED": "true"}.items():
    os.environ.setdefault(key, value)


def run(spec: dict) -> dict:
    """The `Result` of `spec`, as a dict, with this process's peak RSS (and GPU memory)."""
    from rlhf.train.runtime import DEVICE_ENV

    os.environ[DEVICE_ENV] = spec.get("device", "cpu")  # the project's stages: refuse without it, or never use a GPU
    import torch

    from benchmarks.trl_peer.measure import bench_device, host_probe, matmul_dtype, peak_gpu_mib, peak_rss_mib

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    dtype, device = matmul_dtype(spec.get("precision", "fp32")), bench_device()
    before = host_probe(dtype, device)
    if spec["side"] == "project":
        from benchmarks.trl_peer.project import RUNNERS
    elif spec["trainer"] == "ppo":
        from benchmarks.trl_peer.peer_ppo import RUNNERS
    else:
        from benchmarks.trl_peer.peer import RUNNERS
    def trainer():
        return RUNNERS[spec["trainer"]](Path(spec["root"]), spec["size"], spec["warmup"], spec["steps"],
                                        spec.get("precision", "fp32"))

    if spec.get("profile"):
        from benchmarks.trl_peer.op_profile import profiled

        result, split = profiled(trainer, spec["warmup"])
        result.profile = split
    else:
        result = trainer()
    result.rss_mib, result.gpu_mib = peak_rss_mib(), peak_gpu_mib()
    result.probe_flops = (before + host_probe(dtype, device)) / 2
    return result.to_json()


def main() -> None:
    spec_path, out_path = sys.argv[1:3]
    warnings.filterwarnings("ignore")  # library deprecation chatter; failures still raise
    out = run(json.loads(Path(spec_path).read_text(encoding="utf-8")))
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    main()
