"""What a speed option of a training stage buys: the stage with the option `true` and `false`, on a
profile's params otherwise, alternating, each run from scratch. The options: `share_prompt` (reward,
DPO: each pair in one row that holds its prompt once) and `group_by_length` (SFT, reward, DPO:
batches of items of about one length).

    python benchmarks/stage_option.py share_prompt [--repeats 2] [--stages reward dpo]
    python benchmarks/stage_option.py group_by_length --profile profiles/real --stages sft reward

Needs the profile's upstream outputs (`./go.sh pipeline`, or `./go.sh real` for profiles/real);
they are linked into a temporary project with the profile's `models/`, so its `artifacts/` are left
as they are. Prints each run's seconds (the stage function, from loading to the saved model), its
training seconds and its held-out figure (SFT: loss; reward, DPO: accuracy), then the means.
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

INPUTS = ("data", "tokenizer", "sft")  # upstream outputs a training stage may read (tokenizer: embedded only)
HELD_OUT = {"sft": "eval/loss/sft", "reward": "eval/rewards/accuracies", "dpo": "eval/rewards/accuracies"}
OPTIONS = ("share_prompt", "group_by_length")


def stages_with(option: str) -> list[str]:
    """The stages (of HELD_OUT's) whose config has the field `option`."""
    return [stage for stage in HELD_OUT if option in SECTIONS[stage].model_fields]


def run_stage(stage: str, params: dict, paths: Paths, option: str, value: bool) -> tuple[float, float, float]:
    """Seconds, training seconds and held-out figure of one run of `stage` with `option: value`."""
    from rlhf.stages.dpo import run_dpo
    from rlhf.stages.reward import run_reward
    from rlhf.stages.sft import run_sft

    shutil.rmtree(paths.root / ".state", ignore_errors=True)  # no checkpoint to resume from
    shutil.rmtree(paths.artifacts / stage, ignore_errors=True)
    cfg = SECTIONS[stage](**{**params[stage], option: value})
    start = time.perf_counter()
    out = {"sft": run_sft, "reward": run_reward, "dpo": run_dpo}[stage](cfg, paths)
    train = out.metrics.get("time/train_s", float("nan"))
    return time.perf_counter() - start, train, out.metrics[HELD_OUT[stage]]


def link_inputs(profile: Path, root: Path, stages: list[str]) -> None:
    """Link `profile`'s `models/` and upstream outputs into the project at `root`, read-only inputs
    that are not copied; the outputs of `stages` are left out, so a stage that runs there writes its
    own under `root`, never into `profile` (SFT's then feeds the later stages)."""
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    for name in ("models", *(f"artifacts/{n}" for n in INPUTS if n not in stages)):
        if (profile / name).exists():
            (root / name).symlink_to(profile / name, target_is_directory=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("option", choices=OPTIONS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stages", nargs="+", choices=tuple(HELD_OUT), default=["reward", "dpo"])
    parser.add_argument("--profile", type=Path, default=Path("."), help="project folder: params.yaml, artifacts/, models/")
    args = parser.parse_args()
    profile = (ROOT / args.profile).resolve()
    wrong = [s for s in args.stages if s not in stages_with(args.option)]
    if wrong:
        sys.exit(f"{wrong[0]} has no option {args.option} (it is an option of {', '.join(stages_with(args.option))})")
    if not (profile / "artifacts" / "data").is_dir() or ({"reward", "dpo"} & set(args.stages) and "sft" not in args.stages
                                                         and not (profile / "artifacts" / "sft").is_dir()):
        sys.exit(f"{profile / 'artifacts'} lacks the data or SFT outputs: run the profile's pipeline first")
    params = yaml.safe_load((profile / "params.yaml").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = Paths(Path(tmp))
        link_inputs(profile, paths.root, args.stages)
        for stage in args.stages:
            seconds: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for _ in range(args.repeats):
                for value in (True, False):
                    took, train, held = run_stage(stage, params, paths, args.option, value)
                    seconds[value].append((took, train))
                    print(f"{stage:6} {args.option}={str(value).lower():5}: {took:6.1f} s ({train:6.1f} s training), "
                          f"held-out {HELD_OUT[stage]} {held:.4f}", flush=True)
            (on, on_train), (off, off_train) = (tuple(map(statistics.mean, zip(*seconds[v]))) for v in (True, False))
            print(f"{stage:6} mean: {on:.1f} s ({on_train:.1f} s training) with {args.option} against {off:.1f} s "
                  f"({off_train:.1f} s) without ({off / on:.2f}x, training {off_train / on_train:.2f}x)")


if __name__ == "__main__":
    main()
