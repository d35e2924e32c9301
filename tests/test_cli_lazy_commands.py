"""The ``pybuildless`` group imports a command's module only when that command is looked up, so
a build does not load the other commands; ``--help`` still lists every command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_startup_imports import LOADED_AFTER

ROOT = Path(__file__).resolve().parent.parent
OTHER_COMMANDS = {"pybuildless.cli.pull", "pybuildless.cli.push", "pybuildless.cli.warm", "pybuildless.cli.prune"}


def _run(*argv: str) -> tuple[int, set[str], str]:
    proc = subprocess.run([sys.executable, "-c", LOADED_AFTER, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    return result["code"], set(result["modules"]), "\n".join(lines[:-1])


def test_executor_and_build_load_no_other_command() -> None:
    for argv in (("executor", "--help"), ("pybuildless", "build", "--help")):
        code, modules, out = _run(*argv)
        assert code == 0 and "--dockerfile" in out
        assert "pybuildless.cli.build" in modules
        assert not OTHER_COMMANDS & modules, argv


def test_group_help_lists_every_command() -> None:
    code, modules, out = _run("pybuildless", "--help")
    assert code == 0
    listed = {line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {"build", "pull", "push", "warm", "prune"}
    assert OTHER_COMMANDS | {"pybuildless.cli.build"} <= modules


def test_one_command_loads_only_itself() -> None:
    code, modules, out = _run("pybuildless", "prune", "--help")
    assert code == 0 and "Usage: pybuildless prune" in out
    assert modules & (OTHER_COMMANDS | {"pybuildless.cli.build"}) == {"pybuildless.cli.prune"}


def test_an_unknown_command_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-c", "from pybuildless.cli import main; main()", "nosuch"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "No such command 'nosuch'" in proc.stderr and "Traceback" not in proc.stderr
