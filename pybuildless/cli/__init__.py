"""Command line: thin click commands over the library.

``pybuildless`` is a group (build, pull, push, ...); ``executor`` is Kaniko's
entry point and is the build command itself. Expected errors become one line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping
from typing import Callable, NoReturn

import click

from pybuildless import __version__
from pybuildless.cli.deferred import defer_detectors, pause_collector
from pybuildless.errors import PybuildlessError

# One module per command, each defining ``command``, listed by name. A module is imported only when
# its command is looked up (the command that runs, or every one for ``--help``): a build need not
# load pull/push/warm/prune and what they import. A command that cannot be imported still stops
# the program with its error instead of quietly going missing.
COMMAND_MODULES: tuple[str, ...] = ("build", "pull", "push", "warm", "prune")


class LazyCommands(MutableMapping[str, click.Command]):
    """The group's name -> command table, importing a command's module on first lookup."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._pending = list(names)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded and name in self._pending:
            command = importlib.import_module(f"pybuildless.cli.{name}").command
            self._loaded[name] = command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        if name not in self._pending:
            self._pending.append(name)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self._pending.remove(name)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, name: object) -> bool:
        return name in self._pending


@click.group(commands=LazyCommands(COMMAND_MODULES), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pybuildless")
def cli() -> None:
    """Build container images from a Dockerfile without a daemon."""


def run_guarded(command: click.Command, args: list[str] | None, prog_name: str) -> None:
    """Run a click command, turning expected errors into a message and exit code."""
    try:
        command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except PybuildlessError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except OSError as e:
        # Disk full, permission denied, a file vanished: one line, not a traceback.
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        click.echo(f"error: {e.strerror or e}{where}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def main(args: list[str] | None = None) -> None:
    defer_detectors()
    if args is None:
        pause_collector()
        exit_without_teardown(lambda: run_guarded(cli, None, "pybuildless"))
    run_guarded(cli, args, "pybuildless")


def executor_main(args: list[str] | None = None) -> None:
    defer_detectors()
    from pybuildless.cli import build

    if args is None:
        pause_collector()
        exit_without_teardown(lambda: run_guarded(build.command, None, "executor"))
    run_guarded(build.command, args, "executor")


def exit_without_teardown(run: Callable[[], None]) -> NoReturn:
    """Run the program, then end the process the way the interpreter would, minus its teardown.

    Freeing every module of a build (~500 of them) costs ~40 ms, a sixth of a small build's wall time.
    What the interpreter does at exit that matters is done here in its order: wait for running
    (non-daemon) threads, run the atexit handlers, flush logging and the standard streams. Only for
    the program's own entry points (argv from the command line): a caller in the same process
    (a test, an embedding program) keeps a normal SystemExit, and so does a run under a profiler
    or coverage tracer, which write their data in the teardown.
    """
    import atexit
    import logging
    import os
    import threading

    if sys.getprofile() is not None or sys.gettrace() is not None:
        run()  # a profiler or coverage writes its data in the teardown: exit the usual way
        sys.exit(0)
    try:
        run()
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:  # sys.exit("message"): printed to stderr, status 1, as the interpreter does
            print(e.code, file=sys.stderr)
            code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads, as at interpreter exit
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: the interpreter reports it with status 120
            code = code or 120
    os._exit(code)
