"""Warm stage processes: a stage command's imports paid once per pipeline, not once per stage.

A stage command that DVC starts (`rlhf sft`) spends 4-10 s of a small CPU importing Prefect,
MLflow, torch and transformers before it does any work. While `rlhf pipeline` runs its stages
through DVC, a warm process (`serve`) holds those imports. The `rlhf` process DVC starts (`main`,
the console entry) hands it its arguments, folder, environment and standard streams over a Unix
socket; the warm process forks a child that runs the command (the same code, in a process of its
own, with its own exit code) and reports how the child ended. The `rlhf` process forwards
SIGINT, SIGTERM and SIGHUP to the child and exits as the child did; when it dies, the warm process
stops the child.

A command runs cold, as its own process, when `RLHF_WARM_SOCKET` is unset, the warm process does
not answer, or the command's environment differs from the one the warm process imported its
libraries under (Prefect, Hugging Face and others read settings at import) in a variable other
than those DVC and the shell set per command (`per_command`). Linux only: it forks a process that
has imported torch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

SOCKET_ENV = "RLHF_WARM_SOCKET"  # set for the stage commands of one `rlhf pipeline`
OFF_ENV = "RLHF_WARM_STAGES"  # "0": every stage command starts cold
ENTRY = "flows.cli:main"  # what a child runs: the `rlhf` command line
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# set by DVC (and the shell it runs a command in) or by the pipeline for each command
PER_COMMAND = {"RLHF_PREFECT_PARENT_TASK_RUN", SOCKET_ENV, "PWD", "OLDPWD", "SHLVL", "_"}


def per_command(name: str) -> bool:
    return name in PER_COMMAND or name.startswith("DVC_")


def differing(env: Mapping[str, str], base: Mapping[str, str]) -> list[str]:
    """The variables, other than per-command ones, whose values differ between two environments."""
    return sorted(k for k in set(env) | set(base) if not per_command(k) and env.get(k) != base.get(k))


# ---- the `rlhf` process that DVC starts -------------------------------------------------------


def main() -> None:  # pragma: no cover  (the console entry; tests run `run_warm` and the cold path)
    path = os.environ.get(SOCKET_ENV)
    if path and sys.platform == "linux":
        code = run_warm(path, sys.argv)
        if code is not None:
            exit_as(code)
    from flows.cli import main as cold

    cold()


def run_warm(path: str, argv: Sequence[str]) -> int | None:
    """Have the warm process at `path` run `argv` in a child; its exit code (-N: killed by signal
    N), or None when the command must run cold (no warm process, or a different environment)."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        socket.send_fds(sock, [b"\0"], [0, 1, 2])
        payload = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        sock.sendall(struct.pack("!I", len(payload)) + payload)
        replies = sock.makefile("rb")
        first = replies.readline().decode()
    except OSError:
        return None
    if not first.startswith("pid "):  # "cold <variables>": this command runs in a process of its own
        sock.close()
        return None
    pid = int(first.split()[1])

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)
    last = replies.readline().decode()  # "exit <code>" when the child has ended
    if not last.startswith("exit "):
        print(f"error: the warm stage process went away while it ran {' '.join(argv[1:])!r}", file=sys.stderr)
        return 1
    return int(last.split()[1])


def exit_as(code: int) -> None:  # pragma: no cover  (ends the process)
    """Exit with `code`, or, for -N, by signal N, as the child did."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


# ---- the warm process -------------------------------------------------------------------------


def preload_modules() -> list[str]:
    """What stage commands import: the command line, each stage's modules (torch, transformers and
    the rest come with them), the model code of the two model families the profiles use, and what
    the libraries import on first use (MLflow's SQL store, Prefect's engines, plotting)."""
    from tasks.stages import STAGES

    targets = [t for s in STAGES.values() for t in (s.target, s.after_target) if t]
    return ["flows.cli", "flows.pipeline", "tasks.live", "tasks.tracking", "tasks.outbox", "tasks.launch",
            *dict.fromkeys(t.partition(":")[0] for t in targets),
            "transformers.models.gpt2.modeling_gpt2", "transformers.models.llama.modeling_llama",
            "mlflow.store.tracking.sqlalchemy_store", "sqlalchemy.dialects.sqlite", "prefect.flow_engine",
            "prefect.task_engine", "prefect.utilities.visualization", "tabulate", "rlhf.plots", "matplotlib.pyplot"]


def serve(path: str, preload: Sequence[str] | None = None, entry: str = ENTRY) -> None:
    """Import `preload` (by default `preload_modules()`), then answer commands at `path` one at a
    time (DVC runs one stage at a time) until the process that started this one ends."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the pipeline, which stops this process
    parent = os.getppid()
    base = dict(os.environ)  # what the libraries were imported under
    for name in preload_modules() if preload is None else preload:
        try:
            if name == "matplotlib.pyplot":  # with the backend rlhf.plots selects before it imports pyplot
                importlib.import_module("matplotlib").use("Agg")
            importlib.import_module(name)
        except ImportError:  # an optional model family: its commands import it themselves
            pass
    imported = {k: v for k, v in os.environ.items() if base.get(k) != v}  # set by the imports themselves
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # a forked child could not use CUDA: all cold
        return
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path + ".new")
    except OSError:  # a path too long for a socket (a deep TMPDIR): every command starts cold
        return
    listener.listen(8)
    os.rename(path + ".new", path)  # commands find the socket only once it listens
    listener.settimeout(1.0)
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(None)
            try:
                answer(conn, listener, base, imported, entry)
            except (OSError, ValueError, struct.error):  # gone, or not a command: it ran nothing here
                pass
    listener.close()


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    _, fds, _, _ = socket.recv_fds(conn, 1, 3)
    try:
        reader = conn.makefile("rb")
        (size,) = struct.unpack("!I", reader.read(4))
        return json.loads(reader.read(size)), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def answer(conn: socket.socket, listener: socket.socket, base: Mapping[str, str], imported: Mapping[str, str],
           entry: str) -> None:
    """Run one command in a forked child, or tell it to run cold; then report how the child ended.
    `base`: the environment the libraries were imported under; `imported`: what their imports set."""
    request, fds = _receive(conn)
    changed = differing(request["env"], base)
    if len(fds) != 3 or changed:
        for fd in fds:
            os.close(fd)
        conn.sendall(f"cold {','.join(changed[:8]) or 'streams'}\n".encode())
        return
    for stream in (sys.stdout, sys.stderr):  # nothing of this process's output may reach the command's
        stream.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child; its coverage is the command's)
        child(request, fds, [conn, listener], imported, entry)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"pid {pid}\n".encode())
    conn.sendall(f"exit {wait_child(pid, conn)}\n".encode())


def wait_child(pid: int, conn: socket.socket, poll_s: float = 0.2, grace_s: float = 10.0) -> int:
    """The child's exit code (-N: killed by signal N). When the command's end of `conn` closes
    (the `rlhf` process was killed), the child gets SIGTERM, and SIGKILL `grace_s` later."""
    import select
    import time

    stop_at: float | None = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if stop_at is not None:
            if time.monotonic() > stop_at:
                os.kill(pid, signal.SIGKILL)
            time.sleep(poll_s)
            continue
        readable, _, _ = select.select([conn], [], [], poll_s)
        if readable and not conn.recv(1):
            os.kill(pid, signal.SIGTERM)
            stop_at = time.monotonic() + grace_s


def child(request: dict, fds: list[int], inherited: list[socket.socket], imported: Mapping[str, str],
          entry: str) -> None:  # pragma: no cover
    """Become the command's process: its streams, folder, environment (with what the imports set
    in it, as in a process that imported them itself), arguments and a fresh random state, in a
    process group of its own (the `rlhf` process forwards Ctrl-C once); run `entry` and exit with
    its code."""
    import pkgutil
    import random

    code: int | str | None = 1
    try:
        for sock in inherited:
            sock.close()
        os.setpgrp()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.update(imported)
        sys.argv = list(request["argv"])
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())  # type: ignore[union-attr]
        pkgutil.resolve_name(entry)()
        code = 0
    except SystemExit as done:
        code = done.code
    except BaseException:  # noqa: BLE001 - printed as a cold process would print it
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        from flows.cli import exit_now  # as a cold `rlhf` ends: exit hooks, flushed streams, no teardown

        exit_now(code)


@contextmanager
def warm_stages(env: Mapping[str, str]) -> Iterator[bool]:
    """For the stage commands DVC starts in this block: a warm process, started with `env` (the
    environment they get but for per-command variables), found through `RLHF_WARM_SOCKET` in this
    process's environment. Yields whether it started (not off through `RLHF_WARM_STAGES=0`, Linux)."""
    import shutil
    import subprocess
    import tempfile

    if sys.platform != "linux" or os.environ.get(OFF_ENV, "1") == "0":
        yield False
        return
    try:
        folder = tempfile.mkdtemp(prefix="rlhf-warm-")
        path = os.path.join(folder, "socket")
        proc = subprocess.Popen([sys.executable, "-m", "flows.warm", path], env=dict(env), stdin=subprocess.DEVNULL)
    except OSError:  # no temporary folder or no process to be had: the stages start cold
        yield False
        return
    os.environ[SOCKET_ENV] = path
    try:
        yield True
    finally:
        os.environ.pop(SOCKET_ENV, None)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover  (python -m flows.warm SOCKET [ENTRY]: the warm process)
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]  # as the console script: no folder on the path
    serve(sys.argv[1], None, *sys.argv[2:3])
