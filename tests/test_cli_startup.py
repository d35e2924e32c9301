"""Starting the command line stays cheap: ``--help`` and flag errors load neither the HTTP stack,
the builder nor the Dockerfile front end; those load when a command runs (each costs a loaded
machine a tenth of a second or more per process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"requests", "urllib3", "pybuildless.registry.transport", "pybuildless.builder.executor",
         "pybuildless.dockerfile"}

# Runs ``argv`` through a command-line entry point in a fresh interpreter; prints the modules loaded.
_LOADED_AFTER = """
import json, sys
from pybuildless import cli
entry = cli.executor_main if sys.argv[1] == "executor" else cli.main
try:
    entry(sys.argv[2:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(*argv: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _LOADED_AFTER, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [
    ("executor", "--help"),
    ("pybuildless", "--help"),
    ("pybuildless", "pull", "--help"),
    ("pybuildless", "push", "--help"),
    ("pybuildless", "warm", "--help"),
    ("executor", "--no-such-flag"),
])
def test_help_and_flag_errors_load_no_heavy_module(argv) -> None:
    assert not HEAVY & _loaded(*argv)


def test_a_command_that_runs_loads_what_it_needs() -> None:
    # the control: the check above does see these modules once a command gets as far as a registry
    loaded = _loaded("pybuildless", "pull", "127.0.0.1:1/none:v1", "/nonexistent/out", "--retries", "0")
    assert {"requests", "pybuildless.registry.transport"} <= loaded
