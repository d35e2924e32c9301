"""Steps on their own: a Dockerfile stage's instructions expanded by a real ARG/ENV scope and
carried out by their step classes against a temp root, a plain context directory and a
config value; no CLI, registry, sandbox or root needed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pybuildless.builder import imageconfig
from pybuildless.builder.commands import Outcome, StageState, StepContext, step_for
from pybuildless.builder.copy import SourceRoot
from pybuildless.builder.runsupport import Secrets
from pybuildless.builder.sources import BuildSources
from pybuildless.dockerfile.args import GlobalArgs, StageEnv
from pybuildless.dockerfile.parser import parse_dockerfile
from pybuildless.image.descriptor import Platform
from pybuildless.registry.options import RegistryOptions

# The ids of whoever runs the tests: files the steps make can be given to them without root.
SELF = f"{os.geteuid()}:{os.getegid()}"


def no_sandbox():
    raise AssertionError("these steps must not run a command")


@dataclass
class StageRun:
    """One stage of ``text``: ``ctx`` is the step context, ``outcomes`` what each step reported."""

    ctx: StepContext
    text: str
    index: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.ctx.stage.config

    @property
    def container(self) -> dict[str, Any]:
        return self.ctx.stage.config.get("config") or {}


def stage(tmp_path: Path, text: str, *, base: dict[str, Any] | None = None, run: bool = True,
          secrets: tuple[tuple[str, str, str], ...] = (), index: int = 0,
          results: dict[int, Any] | None = None) -> StageRun:
    """Parse ``text`` and take its stage ``index``; with ``run`` execute every instruction after
    its FROM. ``results``: the earlier stages' results, for ``--from``."""
    dockerfile = parse_dockerfile(text)
    root = tmp_path / "root"
    context = tmp_path / "context"
    for d in (root, context, tmp_path / "scratch"):
        d.mkdir(parents=True, exist_ok=True)
    config = imageconfig.stage_config(base or imageconfig.scratch_config(Platform()), None)
    scope = StageEnv(GlobalArgs.resolve(dockerfile.meta_args, {}), {},
                     image_env=config["config"].get("Env") or [])
    state = StageState(index, dockerfile.stages[index].name, root, config, scope)
    sources = BuildSources(SourceRoot(str(context), is_context=True), dockerfile, results or {}, platform=Platform(),
                           registry=RegistryOptions(), blob_dir=tmp_path / "blobs", work=tmp_path)
    ctx = StepContext(state, sources, Secrets(secrets), scratch_dir=tmp_path / "scratch",
                      run_cache_dir=tmp_path / "run-cache", sandbox=no_sandbox, output=lambda chunk: None)
    result = StageRun(ctx, text, index)
    if run:
        for instruction in dockerfile.stages[index].instructions:
            result.outcomes.append(execute(result, instruction))
    return result


def instructions(run: StageRun) -> list:
    return list(parse_dockerfile(run.text).stages[run.index].instructions)


def execute(run: StageRun, instruction) -> Outcome:
    """Expand ``instruction`` in the stage's scope (ARG/ENV take effect), then carry it out."""
    return step_for(run.ctx.vars.apply(instruction)).execute(run.ctx)


def expanded_step(run: StageRun, n: int):
    """The step of the stage's ``n``-th instruction, expanded in the scope as it is now."""
    return step_for(run.ctx.vars.apply(instructions(run)[n]))
