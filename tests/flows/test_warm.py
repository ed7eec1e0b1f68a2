"""flows.warm: a command handed to the warm process runs in a child forked from it, with the
caller's arguments, folder, environment and streams, and ends as the caller ends; anything else
runs cold."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.warm import differing, per_command

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="warm processes fork: Linux only")

SERVER = "import sys; from flows.warm import serve; serve(sys.argv[1], ['json'], 'tests.warm_command:main')"
CLIENT = """
import sys
from flows.warm import exit_as, run_warm
code = run_warm(sys.argv[1], ['rlhf', *sys.argv[2:]])
if code is None:
    print('COLD')
else:
    exit_as(code)
"""


@pytest.fixture
def warm(tmp_path):
    """A warm process serving tests.warm_command at a socket; yields (socket path, its pid, env)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    path = str(tmp_path / "socket")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, path], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        assert proc.poll() is None and time.monotonic() < deadline, "the warm process did not start"
        time.sleep(0.05)
    yield path, proc.pid, env
    proc.terminate()
    proc.wait(10)


def _client(path: str, env: dict, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLIENT, path, *args], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_a_command_runs_in_a_child_of_the_warm_process_with_the_callers_folder_streams_and_code(warm, tmp_path):
    path, server_pid, env = warm
    client = _client(path, {**env, "DVC_ROOT": "/elsewhere", "RLHF_PREFECT_PARENT_TASK_RUN": "x"}, "3", "--flag",
                     cwd=tmp_path)
    out, err = client.communicate("what the caller reads", timeout=60)
    assert client.returncode == 3, err
    seen = json.loads(out)
    assert seen["ppid"] == server_pid and seen["pid"] != client.pid  # forked from the warm process
    assert seen["argv"] == ["rlhf", "3", "--flag"]
    assert Path(seen["cwd"]) == tmp_path
    assert seen["stdin"] == "what the caller reads"
    assert "to stderr" in err

    again = _client(path, {**env, "WARM_TEST_GIVEN": "yes"}, "0")
    out, _ = again.communicate("", timeout=60)
    assert again.returncode == 0 and "COLD" in out  # a variable the warm process lacks: cold


def test_without_a_warm_process_the_command_runs_cold(tmp_path):
    client = _client(str(tmp_path / "none"), dict(os.environ), "0")
    out, _ = client.communicate("", timeout=60)
    assert client.returncode == 0 and out.strip() == "COLD"


def _child_pid(pid_file: Path) -> int:
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.05)
    return int(pid_file.read_text())


def _gone(pid: int, within_s: float = 20.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_signal_to_the_caller_reaches_the_child_and_the_caller_ends_by_it(warm, tmp_path):
    path, _, env = warm
    client = _client(path, env, "sleep", str(tmp_path / "pid"))
    child = _child_pid(tmp_path / "pid")
    client.send_signal(signal.SIGTERM)
    client.communicate(timeout=60)
    assert client.returncode == -signal.SIGTERM
    assert _gone(child)


def test_a_killed_caller_takes_its_child_with_it(warm, tmp_path):
    path, server_pid, env = warm
    client = _client(path, env, "sleep", str(tmp_path / "pid"))
    child = _child_pid(tmp_path / "pid")
    client.kill()  # SIGKILL: nothing forwarded; the warm process sees the socket close
    client.communicate(timeout=60)
    assert _gone(child)
    os.kill(server_pid, 0)  # the warm process itself goes on serving
    after = _client(path, env, "5")
    after.communicate("", timeout=60)
    assert after.returncode == 5


def test_only_per_command_variables_may_differ():
    base = {"PATH": "/bin", "HF_HUB_OFFLINE": "1"}
    assert differing({**base, "DVC_ROOT": "/r", "RLHF_PREFECT_PARENT_TASK_RUN": "t", "PWD": "/x"}, base) == []
    assert differing({"PATH": "/usr/bin", "HF_HUB_OFFLINE": "1", "EXTRA": "1"}, base) == ["EXTRA", "PATH"]
    assert differing({"PATH": "/bin"}, base) == ["HF_HUB_OFFLINE"]  # unset in the command, set in the warm process
    assert per_command("DVC_STAGE") and not per_command("PREFECT_API_URL")


def test_the_pipeline_block_starts_a_warm_process_and_leaves_nothing_behind(monkeypatch):
    from flows.warm import SOCKET_ENV, warm_stages

    monkeypatch.delenv(SOCKET_ENV, raising=False)
    with warm_stages(dict(os.environ)) as started:
        assert started
        folder = Path(os.environ[SOCKET_ENV]).parent
        assert folder.is_dir()
    assert SOCKET_ENV not in os.environ and not folder.exists()

    monkeypatch.setenv("RLHF_WARM_STAGES", "0")
    with warm_stages(dict(os.environ)) as started:
        assert not started and SOCKET_ENV not in os.environ


def test_a_malformed_request_runs_nothing_and_the_warm_process_goes_on(warm):
    import socket

    path, _, env = warm
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        socket.send_fds(sock, [b"\0"], [0, 1, 2])
        sock.sendall(b"\x00\x00\x00\x05nope!")  # a length and bytes that are not JSON
        assert sock.makefile("rb").readline() == b""  # closed without an answer
    after = _client(path, env, "4")
    after.communicate("", timeout=60)
    assert after.returncode == 4
