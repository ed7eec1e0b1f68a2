"""One stage in several processes: `RLHF_NUM_PROCESSES=N rlhf sft` (or `dvc repro`).

The stage's task starts `torch.distributed.run --nproc_per_node N -m tasks.launch ...` (or, with
`RLHF_ACCELERATE_CONFIG=configs/accelerate/ddp.yaml`, `accelerate launch` with that config): each process
runs the library function (accelerate forms one data-parallel group: NCCL on GPUs, gloo on CPUs;
the trainers shard every global batch, so the run equals the one-process run within float
tolerance), and process 0 writes the stage's output as JSON, which the task reads back and tracks
as usual; the history rows of process 0 reach the task's live MLflow run while the processes train.
The stages that shard their work (SFT, reward, PPO, DPO) use it; the others run in one process.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from rlhf.errors import UserError
from rlhf.files import write_json
from rlhf.stage import StageOutput, heard, listening
from tasks.child import relay

NUM_PROCESSES_ENV = "RLHF_NUM_PROCESSES"
ACCELERATE_CONFIG_ENV = "RLHF_ACCELERATE_CONFIG"  # an `accelerate launch` config (configs/accelerate/)
ROWS_ENV = "RLHF_HISTORY_ROWS"  # the file process 0 appends its history rows to (set by run_in_processes)


def num_processes() -> int:
    """N of RLHF_NUM_PROCESSES (1 when unset, and inside a process that a launcher started)."""
    if "LOCAL_RANK" in os.environ:  # already one of N
        return 1
    text = os.environ.get(NUM_PROCESSES_ENV, "1").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{NUM_PROCESSES_ENV}={text!r}: expected a whole number of processes, 1 or more")
    return int(text)


def _forward(rows: Path, offset: int) -> int:
    """Hand the history rows process 0 appended to `rows` after byte `offset` to this process's
    listener (`rlhf.stage.heard`: the live MLflow run); returns the offset after the last whole row."""
    if not rows.is_file():
        return offset
    with rows.open("rb") as f:
        f.seek(offset)
        data = f.read()
    whole = data[: data.rfind(b"\n") + 1]  # a row still being written waits for the next call
    for line in whole.splitlines():
        heard(json.loads(line))
    return offset + len(whole)


def run_in_processes(stage: str, params: str, root: str, n: int) -> StageOutput:
    """Run `stage` in `n` processes; returns process 0's output. Its history rows reach this
    process's listener while the processes train (through a file that process 0 appends to)."""
    from tasks.outbox import record_output

    out = Path(root) / ".state" / "launch" / f"{stage}.json"
    rows = out.with_suffix(".rows.jsonl")
    for path in (out, rows):
        path.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = os.environ.get(ACCELERATE_CONFIG_ENV)
    if config:  # accelerate's launcher with the user's config (e.g. configs/accelerate/ddp.yaml)
        if not Path(config).is_file():
            raise UserError(f"{ACCELERATE_CONFIG_ENV}={config}: no such accelerate config file")
        launcher = ["-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", str(n), "--module"]
    else:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m"]
    cmd = [sys.executable, *launcher, "tasks.launch", stage, params, root, str(out)]
    errors: list[str] = []
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, env={**os.environ, ROWS_ENV: str(rows)}) as proc:
        reader = threading.Thread(target=relay, args=(proc.stderr, errors), daemon=True)
        reader.start()
        offset = 0
        while proc.poll() is None:
            offset = _forward(rows, offset)
            time.sleep(0.5)
        reader.join()
    _forward(rows, offset)
    if proc.returncode != 0 or not out.is_file():
        raise UserError(f"{stage} in {n} processes failed (exit {proc.returncode})"
                        + (f": {errors[0]}" if errors else "; see the processes' output above"))
    return record_output(json.loads(out.read_text(encoding="utf-8")))


def main() -> None:
    """One of the N processes: run the library function; process 0 writes the output."""
    from rlhf.config import load_config
    from rlhf.paths import Paths
    from tasks.outbox import make_record
    from tasks.stages import STAGES

    stage, params, root, out = sys.argv[1:5]
    rows = os.environ.get(ROWS_ENV)

    def append(row: dict) -> None:  # process 0's history rows, for the launching task's live run
        with open(rows, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    try:
        extra = {section: load_config(section, params) for section in STAGES[stage].reads}
        with listening(append) if rows else contextlib.nullcontext():
            output = STAGES[stage].run(load_config(stage, params), Paths(Path(root)), **extra)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(out, make_record(stage, {}, output, 0.0))


if __name__ == "__main__":
    main()
