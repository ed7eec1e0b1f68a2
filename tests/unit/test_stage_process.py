"""What a stage's process pays besides its work: it imports only its own stage's code, and it exits
without the interpreter's teardown (`flows.cli.exit_now`) but with everything an exit owes its work."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_light_stages_do_not_import_torch():
    done = _python("""
        import sys
        from tasks.stages import STAGES
        loaded = [STAGES[s].run for s in ("data", "validate", "tokenizer")]
        print(all(callable(f) for f in loaded), "torch" in sys.modules)
        STAGES["sft"].run
        print("torch" in sys.modules)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "True"]


def test_exit_now_keeps_what_an_exit_owes():
    done = _python("""
        import atexit, threading, time, sys
        from flows.cli import exit_now

        def late():  # a non-daemon thread still working: the exit waits for it
            time.sleep(0.3)
            print("thread done")
        threading.Thread(target=late).start()
        atexit.register(lambda: print("atexit ran"))
        sys.stdout.write("buffered, no newline")  # still in the buffer when exit_now is called
        exit_now(3)
    """)
    assert done.returncode == 3
    assert done.stdout == "buffered, no newlinethread done\natexit ran\n"  # joined, then atexit, then flushed


def test_exit_now_with_a_message_exits_1():
    done = _python("""
        from flows.cli import exit_now
        exit_now("error: something the user must read")
    """)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: something the user must read"


def test_tracking_store_opens_in_the_background(tmp_path):
    """`open_tracking_store_early` creates the SQLite store in its thread; `tracking_store_ready`
    returns once it exists, and logging then uses it."""
    done = _python(f"""
        import os
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///{tmp_path / 'mlflow.db'}"
        from tasks.env import open_tracking_store_early, tracking_store_ready
        open_tracking_store_early()
        open_tracking_store_early()  # once per process
        tracking_store_ready()
        import sys, threading
        print(os.path.getsize("{tmp_path / 'mlflow.db'}") > 0, "mlflow" in sys.modules,
              [t.name for t in threading.enumerate() if t.name == "open-tracking-store"])
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "[]"]


def test_no_local_server_starts_when_one_is_configured():
    done = _python("""
        import os, threading
        os.environ["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
        from flows.prefect_api import start_local_server_early
        wait = start_local_server_early()
        wait()
        print([t.name for t in threading.enumerate() if t.name == "start-prefect-server"])
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
