"""Command line: thin click commands over the library.

``pybuildless`` is a group (build, pull, push, ...); ``executor`` is Kaniko's
entry point and is the build command itself. Expected errors become one line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys

import click

from pybuildless import __version__
from pybuildless.cli import build, prune, pull, push, warm
from pybuildless.errors import PybuildlessError

# One module per command, each defining ``command``; imported by name, so a command that cannot be
# imported stops the program with its error instead of quietly going missing.
COMMANDS: tuple[click.Command, ...] = (build.command, pull.command, push.command, warm.command, prune.command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pybuildless")
def cli() -> None:
    """Build container images from a Dockerfile without a daemon."""


for _cmd in COMMANDS:
    cli.add_command(_cmd)


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
    run_guarded(cli, args, "pybuildless")


def executor_main(args: list[str] | None = None) -> None:
    run_guarded(build.command, args, "executor")
