"""What a speed option of the reward and DPO stages buys in the embedded pipeline: each stage with
the option `true` and `false`, on the shipped params otherwise, alternating, each run from scratch.
The options: `share_prompt` (each pair in one row that holds its prompt once; on by default) and
`group_by_length` (batches of pairs of about one length; on by default).

    python benchmarks/stage_option.py share_prompt [--repeats 2] [--stages reward dpo]
    python benchmarks/stage_option.py group_by_length

Needs the pipeline's data, tokenizer and SFT outputs (`./go.sh pipeline` first); they are copied
into a temporary project, so `artifacts/` is left as it is. Prints each run's seconds (the stage
function, from loading to the saved model) and held-out accuracy, then the mean time per setting.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rlhf.config import SECTIONS  # noqa: E402
from rlhf.paths import Paths  # noqa: E402

INPUTS = ("data", "tokenizer", "sft")  # what the reward and DPO stages read
OPTIONS = ("share_prompt", "group_by_length")  # boolean fields of both RewardConfig and DPOConfig


def run_stage(stage: str, params: dict, paths: Paths, option: str, value: bool) -> tuple[float, float]:
    """Seconds and held-out accuracy of one run of `stage` with `option: value`."""
    from rlhf.stages.dpo import run_dpo
    from rlhf.stages.reward import run_reward

    shutil.rmtree(paths.root / ".state", ignore_errors=True)  # no checkpoint to resume from
    shutil.rmtree(paths.artifacts / stage, ignore_errors=True)
    cfg = SECTIONS[stage](**{**params[stage], option: value})
    start = time.perf_counter()
    out = (run_reward if stage == "reward" else run_dpo)(cfg, paths)
    return time.perf_counter() - start, out.metrics["eval/rewards/accuracies"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("option", choices=OPTIONS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stages", nargs="+", choices=("reward", "dpo"), default=["reward", "dpo"])
    args = parser.parse_args()
    missing = [name for name in INPUTS if not (ROOT / "artifacts" / name).is_dir()]
    if missing:
        sys.exit(f"artifacts/{missing[0]} is missing: run ./go.sh pipeline first")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = Paths(Path(tmp))
        for name in INPUTS:
            shutil.copytree(ROOT / "artifacts" / name, paths.artifacts / name)
        for stage in args.stages:
            seconds: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):
                for value in (True, False):
                    took, accuracy = run_stage(stage, params, paths, args.option, value)
                    seconds[value].append(took)
                    print(f"{stage:6} {args.option}={str(value).lower():5}: {took:6.1f} s, "
                          f"held-out accuracy {accuracy:.4f}", flush=True)
            on, off = statistics.mean(seconds[True]), statistics.mean(seconds[False])
            print(f"{stage:6} mean: {on:.1f} s with {args.option} against {off:.1f} s without ({off / on:.2f}x)")


if __name__ == "__main__":
    main()
