"""The step seam: what one Dockerfile instruction does, and the narrow context it does it in.

A ``Step`` (one class per instruction, made by ``commands.step_for``; Kaniko's
pkg/commands DockerCommand plays the same part) has three faces:

- ``execute(ctx)``: do it — change the stage's config, write into its root, run a
  command — and say what it touched (an ``Outcome``);
- ``cache_key(ctx)``: what decides a filesystem step's result, for the layer cache;
  None when it must never come from the cache. Only asked of ``touches_files`` steps:
  a metadata step is folded into the key chain by its history text;
- ``config_effect(config)``: the step's change to an image config, as a new config.
  ``execute`` applies it; the stage applies it alone when the step's layer comes from
  the cache (WORKDIR's ``WorkingDir``), since ``execute`` does not run then.

``StepContext`` is all a step may reach: the stage's own state (root, config, ARG/ENV
scope), the sources for COPY --from and bind mounts, secrets, the cache-mount
directory, the stage root's sandbox, and where RUN output goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

from pybuildless.builder.commands.outcome import Outcome
from pybuildless.dockerfile import instructions as ins

if TYPE_CHECKING:
    from pybuildless.builder.copy import SourceRoot
    from pybuildless.dockerfile.args import StageEnv
    from pybuildless.image.descriptor import Platform
    from pybuildless.image.model import Layer
    from pybuildless.sandbox.base import Sandbox


@dataclass
class StageState:
    """The one stage's state that steps read and change."""

    index: int
    name: str | None
    root: Path
    config: dict[str, Any]
    vars: StageEnv
    cmd_set: bool = False  # a CMD in this stage: ENTRYPOINT then keeps it (BuildKit's dispatchState.cmdSet)
    layers: list[Layer] = field(default_factory=list)

    @property
    def container_config(self) -> dict[str, Any]:
        return self.config.setdefault("config", {})

    @property
    def workdir(self) -> str:
        return self.container_config.get("WorkingDir") or "/"

    @property
    def user(self) -> str:
        return self.container_config.get("User") or "root"

    @property
    def shell(self) -> list[str]:
        return list(self.container_config.get("Shell") or ins.DEFAULT_SHELL)


class Sources(Protocol):
    """Files a step reads besides its own root: the build context, earlier stages, images."""

    @property
    def context(self) -> SourceRoot: ...

    def root(self, ref: str, inst: ins.Instruction) -> SourceRoot:
        """``--from=ref``: a stage's final files or an image's, laid down when first asked for."""

    def key(self, ref: str) -> str | None:
        """The cache key of ``--from=ref``; None when that stage could not be cached."""


class Secrets(Protocol):
    def get(self, ident: str) -> bytes | None:
        """The value of ``--secret id=ident``; None when the build was given none."""


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides its instruction: the stage, the sources, secrets and sandbox."""

    stage: StageState
    sources: Sources
    secrets: Secrets
    scratch_dir: Path  # temporary files of a step (downloads, heredocs, bind-mount copies)
    run_cache_dir: Path  # RUN --mount=type=cache directories, kept between builds
    sandbox: Callable[[], Sandbox]  # the stage root's sandbox, opened on first use
    output: Callable[[bytes], None]  # RUN's stdout and stderr
    platform: Platform | None = None  # what the stage is built for (RUN checks it can run it)

    # The stage's state under the names the steps use.
    @property
    def root(self) -> Path:
        return self.stage.root

    @property
    def config(self) -> dict[str, Any]:
        return self.stage.config

    @property
    def container_config(self) -> dict[str, Any]:
        return self.stage.container_config

    @property
    def vars(self) -> StageEnv:
        return self.stage.vars

    @property
    def workdir(self) -> str:
        return self.stage.workdir

    @property
    def user(self) -> str:
        return self.stage.user

    @property
    def shell(self) -> list[str]:
        return self.stage.shell


class Step(Protocol):
    touches_files: ClassVar[bool]

    def execute(self, ctx: StepContext) -> Outcome: ...

    def cache_key(self, ctx: StepContext) -> list[str] | None: ...

    def config_effect(self, config: dict[str, Any]) -> dict[str, Any]: ...


def with_container_config(config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``config`` whose ``config`` section has ``changes``; the input is left as it is."""
    return {**config, "config": {**(config.get("config") or {}), **changes}}
