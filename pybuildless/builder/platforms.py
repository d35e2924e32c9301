"""Which platform each stage is built for, and whether its RUN steps can run here.

BuildKit's rules (moby/buildkit frontend/dockerfile/dockerfile2llb/convert.go@73ed6825):
a stage ``FROM --platform=P`` is built for P, a stage ``FROM <stage>`` for that stage's
platform, any other stage for the target platform. BUILDPLATFORM is the host's.

A RUN step for a platform the host cannot run natively needs a binfmt_misc
handler with the F flag (``build.binfmt``). The check is made for every planned
stage before anything is pulled or built, so a build that cannot finish fails at
once with the line, instead of an ``exec format error`` half way through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pybuildless.dockerfile import instructions as ins
from pybuildless.dockerfile.parser import Dockerfile
from pybuildless.dockerfile.args import GlobalArgs, platform_args
from pybuildless.dockerfile.stages import BuildPlan, plan_build
from pybuildless.errors import PybuildlessError, UsageError, at_instruction
from pybuildless.image.descriptor import Platform

REMEDY = ("install an emulator registered with the F flag on the host or node (binfmt_misc handlers are "
          "kernel-wide: containers use the host's), e.g. `apt-get install qemu-user-static` "
          "(or `docker run --privileged --rm tonistiigi/binfmt --install all`)")


@dataclass(frozen=True)
class PlatformPlan:
    """One target platform, planned and checked: nothing built yet."""

    platform: Platform
    glob: GlobalArgs
    plan: BuildPlan
    stage_platforms: dict[int, Platform]


def plan_platform(build_args: Iterable[tuple[str, str]], target: str | None, dockerfile: Dockerfile,
                  platform: Platform) -> PlatformPlan:
    """The ARGs, stages and stage platforms of a build for ``platform``; its RUN steps checked."""
    # BUILDPLATFORM is where the steps run (this host), TARGETPLATFORM what is built
    # (moby/buildkit frontend/dockerfile/dockerfile2llb/platform.go@73ed6825 defaultArgs).
    args = platform_args(str(platform), str(Platform.host()))
    glob = GlobalArgs.resolve(dockerfile.meta_args, dict(build_args), args)
    plan = plan_build(dockerfile, target, glob.env)
    platforms = stage_platforms(dockerfile, plan, platform)
    check_foreign_runs(dockerfile, platforms)  # before anything is pulled: fail in a moment, not half way
    return PlatformPlan(platform, glob, plan, platforms)


def parse_platforms(text: str | None) -> list[Platform]:
    """``--custom-platform``/``--platform``: one platform or a comma-separated list (default: this host)."""
    if not text or not text.strip():
        return [Platform.host()]
    out: list[Platform] = []
    for part in text.split(","):
        try:
            platform = Platform.parse(part)
        except PybuildlessError as e:
            raise UsageError(f"--custom-platform {text!r}: {e}") from None
        if platform not in out:  # linux/arm64 and linux/arm64/v8 are one platform
            out.append(platform)
    return out


def stage_platforms(dockerfile: Dockerfile, plan: BuildPlan, target: Platform) -> dict[int, Platform]:
    """Each planned stage's platform; a bad ``--platform`` value names its FROM line."""
    out: dict[int, Platform] = {}
    for index in plan.order:  # dependencies first
        base = plan.bases[index]
        if base.stage is not None:
            out[index] = out[base.stage]
        elif base.platform:
            try:
                out[index] = Platform.parse(base.platform)
            except PybuildlessError as e:
                where = dockerfile.stages[index].from_
                raise at_instruction(e, path=where.path, line=where.line, end_line=where.end_line or where.line,
                                     source_text=dockerfile.text or None) from None
        else:
            out[index] = target
    return out


def can_run(platform: Platform, host: Platform | None = None, handlers_dir=None) -> bool:
    """True when this host runs ``platform``'s programs: natively or through an F-flag emulator."""
    from pybuildless.builder import binfmt  # only a build with RUN steps asks

    host = host or Platform.host()
    return binfmt.runs_natively(platform, host) or binfmt.emulator_for(platform, handlers_dir) is not None


def foreign_run_error(run: ins.Run, stage_label: str, platform: Platform, host: Platform | None = None,
                      handlers_dir=None) -> PybuildlessError:
    from pybuildless.builder import binfmt

    host = host or Platform.host()
    directory = handlers_dir or binfmt.handlers_dir()
    where = f"in {directory}" if handlers_dir or binfmt.is_mounted(directory) else (
        f"({directory} is not mounted here, as in a container, and a test program for it did not run)")
    return run.error(
        f"{stage_label} runs RUN for {platform} but this {host} host cannot run {platform.architecture} programs: "
        f"no binfmt_misc handler with the F flag for it {where}; {REMEDY}")


def check_foreign_runs(dockerfile: Dockerfile, platforms: Mapping[int, Platform], host: Platform | None = None,
                       handlers_dir=None) -> None:
    """Fail unless every RUN of the planned stages can run on this host. (A RUN that only an
    ONBUILD trigger of a base adds is checked when it is reached: ``commands.run``.)"""
    host = host or Platform.host()
    checked: dict[Platform, bool] = {}
    for index in sorted(platforms):
        platform = platforms[index]
        stage = dockerfile.stages[index]
        first_run = next((i for i in stage.instructions if i.keyword == "RUN"), None)
        if first_run is None:
            continue
        if platform not in checked:
            checked[platform] = can_run(platform, host, handlers_dir)
        if not checked[platform]:
            raise foreign_run_error(first_run, stage_label(stage.name, index), platform, host, handlers_dir)


def stage_label(name: str | None, index: int) -> str:
    return f"stage {name!r}" if name else f"stage {index}"
