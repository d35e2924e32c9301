"""The program's entry points end the process without the interpreter's teardown
(``cli.exit_without_teardown``) but keep everything an exit must do: exit status, messages,
threads still running, atexit handlers, buffered output on a pipe."""

from __future__ import annotations

import subprocess
import sys

import pytest

PRELUDE = """
import atexit, sys, threading, time
atexit.register(lambda: print("atexit handler ran", flush=False))
def late():
    time.sleep(0.3)
    print("thread finished")
threading.Thread(target=late).start()
sys.stdout.write("x" * 100000 + "\\n")  # far more than one pipe buffer write: must be flushed at exit
"""


def run_entry(entry: str, *args: str) -> subprocess.CompletedProcess:
    code = PRELUDE + f"from pybuildless.cli import {entry}; {entry}()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("entry,args,status", [
    ("main", ("--version",), 0),
    ("main", ("no-such-command",), 2),
    ("executor", ("--frobnicate",), 2),
    ("executor", ("--context", "/nonexistent-context-dir", "--no-push"), 2),
])
def test_exit_keeps_status_output_threads_and_atexit(entry: str, args: tuple[str, ...], status: int) -> None:
    proc = run_entry("executor_main" if entry == "executor" else "main", *args)
    assert proc.returncode == status, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "x" * 100000
    # the non-daemon thread is waited for, then the atexit handlers run: the interpreter's order
    assert lines[-2:] == ["thread finished", "atexit handler ran"]
    if status == 0:
        assert "pybuildless, version" in proc.stdout
    else:
        assert proc.stderr.strip(), "an error must say what went wrong"
        assert "Traceback" not in proc.stderr


def test_sys_exit_with_a_message_prints_it_and_exits_1() -> None:
    code = ("from pybuildless.cli import exit_without_teardown\n"
            "import sys\n"
            "exit_without_teardown(lambda: sys.exit('stopped: reason'))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "stopped: reason"


def test_in_process_callers_keep_a_normal_system_exit() -> None:
    from pybuildless.cli import main

    with pytest.raises(SystemExit) as raised:
        main(["no-such-command"])
    assert raised.value.code == 2


def test_a_profiled_run_still_writes_its_profile(tmp_path) -> None:
    out = tmp_path / "run.prof"
    proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "pybuildless", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pybuildless, version" in proc.stdout
    import pstats

    assert pstats.Stats(str(out)).total_calls > 0
