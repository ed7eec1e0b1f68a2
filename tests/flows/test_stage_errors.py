"""An error written for the user says so once: `rlhf <stage>` prints a `UserError`'s message (a
diverged run's `NonFiniteError`, a missing upstream output) as one `error:` line (Prefect's console
records of it, tracebacks included, are held back, unless `rlhf --debug`) and exits 1; any other
failure keeps Prefect's account. Run in a subprocess with its own ephemeral Prefect
server, since Prefect's console handler writes to the process's real stderr."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = ("tokenizer: non-finite grad_norm (nan) at step 7; the last good checkpoint (step 5) is kept, "
           "no model was written; lower tokenizer.learning_rate or set tokenizer.nonfinite: skip")
SCRIPT = """
import sys
import tasks.stages
from flows.cli import app
from rlhf.errors import UserError
from rlhf.train.optim import NonFiniteError

def diverged(cfg, paths):
    raise NonFiniteError(sys.argv[1])

def broken(cfg, paths):
    raise RuntimeError("a bug")

def no_input(cfg, paths):
    raise UserError("stage 'tokenizer' needs artifacts/data, which is missing")

for run, debug in ((diverged, []), (broken, []), (no_input, []), (no_input, ["--debug"])):
    tasks.stages.library_function = lambda stage: run
    try:
        app(debug + ["tokenizer", "--params", "params.yaml"])
    except SystemExit as done:
        print(f"=== exit {done.code}", file=sys.stderr, flush=True)
"""


def test_a_diverged_stage_prints_its_message_once_and_other_failures_as_before(tmp_path):
    (tmp_path / "params.yaml").write_text("tokenizer:\n  vocab_size: 1000\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # a private ephemeral server
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    done = subprocess.run([sys.executable, "-c", SCRIPT, MESSAGE], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    diverged, broken, missing, debug, _ = done.stderr.split("=== exit 1\n")
    assert diverged.count("non-finite") == 1 and f"\nerror: {MESSAGE}\n" in diverged
    assert "Traceback" not in diverged and "NonFiniteError" not in diverged
    assert "error: stage 'tokenizer' failed: Flow run encountered an exception: RuntimeError: a bug" in broken
    assert "Traceback" in broken  # Prefect's own report of an unexpected error is left as it was
    assert missing.count("artifacts/data") == 1 and "Traceback" not in missing
    assert "\nerror: stage 'tokenizer' needs artifacts/data, which is missing\n" in missing
    assert "Traceback" in debug and "UserError" in debug  # --debug shows Prefect's full account
