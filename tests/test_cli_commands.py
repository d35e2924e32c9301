"""The command line registers every command module of pybuildless/cli by name."""

from __future__ import annotations

import importlib
import pkgutil

import click

import pybuildless.cli as cli_package
from pybuildless.cli import cli, executor_main


def test_every_command_module_is_registered() -> None:
    defined = {}
    for info in pkgutil.iter_modules(cli_package.__path__):
        command = getattr(importlib.import_module(f"pybuildless.cli.{info.name}"), "command", None)
        if isinstance(command, click.Command):
            defined[command.name] = command
    assert {"build", "pull", "push", "warm", "prune"} <= set(defined)
    assert {name: cli.commands.get(name) for name in defined} == defined


def test_executor_is_the_build_command(capsys) -> None:
    try:
        executor_main(["version"])
    except SystemExit as e:
        assert e.code in (0, None)
    assert capsys.readouterr().out.startswith("pybuildless version")
