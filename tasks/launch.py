"""One stage in several processes: `RLHF_NUM_PROCESSES=N rlhf sft` (or `dvc repro`).

The stage's task starts `torch.distributed.run --nproc_per_node N -m tasks.launch ...` (or, with
`RLHF_ACCELERATE_CONFIG=configs/accelerate/ddp.yaml`, `accelerate launch` with that config): each process
runs the library function (accelerate forms one data-parallel group: NCCL on GPUs, gloo on CPUs;
the trainers shard every global batch, so the run equals the one-process run within float
tolerance), and process 0 writes the stage's output as JSON, which the task reads back and tracks
as usual. The stages that shard their work (SFT, reward, DPO) use it; the others run in one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rlhf.errors import UserError
from rlhf.files import write_json
from rlhf.stage import StageOutput

NUM_PROCESSES_ENV = "RLHF_NUM_PROCESSES"
ACCELERATE_CONFIG_ENV = "RLHF_ACCELERATE_CONFIG"  # an `accelerate launch` config (configs/accelerate/)


def num_processes() -> int:
    """N of RLHF_NUM_PROCESSES (1 when unset, and inside a process that a launcher started)."""
    if "LOCAL_RANK" in os.environ:  # already one of N
        return 1
    text = os.environ.get(NUM_PROCESSES_ENV, "1").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{NUM_PROCESSES_ENV}={text!r}: expected a whole number of processes, 1 or more")
    return int(text)


def run_in_processes(stage: str, params: str, root: str, n: int) -> StageOutput:
    """Run `stage` in `n` processes; returns process 0's output."""
    from tasks.outbox import record_output

    out = Path(root) / ".state" / "launch" / f"{stage}.json"
    out.unlink(missing_ok=True)
    config = os.environ.get(ACCELERATE_CONFIG_ENV)
    if config:  # accelerate's launcher with the user's config (e.g. configs/accelerate/ddp.yaml)
        if not Path(config).is_file():
            raise UserError(f"{ACCELERATE_CONFIG_ENV}={config}: no such accelerate config file")
        launcher = ["-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", str(n), "--module"]
    else:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m"]
    cmd = [sys.executable, *launcher, "tasks.launch", stage, params, root, str(out)]
    done = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(done.stderr)
    errors = [line.removeprefix("error: ") for line in done.stderr.splitlines() if line.startswith("error: ")]
    if done.returncode != 0 or not out.is_file():
        raise UserError(f"{stage} in {n} processes failed (exit {done.returncode})"
                        + (f": {errors[0]}" if errors else "; see the processes' output above"))
    return record_output(json.loads(out.read_text(encoding="utf-8")))


def main() -> None:
    """One of the N processes: run the library function; process 0 writes the output."""
    from rlhf.config import load_config
    from rlhf.paths import Paths
    from tasks.outbox import make_record
    from tasks.stages import STAGES

    stage, params, root, out = sys.argv[1:5]
    try:
        extra = {section: load_config(section, params) for section in STAGES[stage].reads}
        output = STAGES[stage].run(load_config(stage, params), Paths(Path(root)), **extra)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(out, make_record(stage, {}, output, 0.0))


if __name__ == "__main__":
    main()
