"""A command for tests/flows/test_warm.py to run in a warm process's child: it reports what it was
given and exits with the code named by its first argument (`sleep`: it waits to be stopped)."""

import json
import os
import sys
import time


def main() -> None:
    what = sys.argv[1]
    if what == "sleep":
        with open(sys.argv[2], "w") as out:  # tells the test that the child runs, and its pid
            out.write(str(os.getpid()))
        time.sleep(120)
    print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "pid": os.getpid(), "ppid": os.getppid(),
                      "given": os.environ.get("WARM_TEST_GIVEN"), "stdin": sys.stdin.read()}))
    print("to stderr", file=sys.stderr)
    sys.exit(int(what))
