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
