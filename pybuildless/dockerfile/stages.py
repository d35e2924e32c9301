"""Stage resolution and the build graph.

``plan_build(dockerfile, target=None, meta_env={})`` resolves each stage's FROM with the meta
ARGs (``GlobalArgs.env``), finds the dependencies (``FROM <stage>``, ``COPY --from=<stage|index>``,
``RUN --mount=from=<stage|index>``), and returns a ``BuildPlan`` with only the stages the
target needs, in a valid order and grouped into ``levels`` (stages within a level do not depend
on one another and may run in parallel). A ``--from`` naming neither a stage nor an index is
an image reference (collected in ``BuildPlan.images``). Unknown ``--target`` is an error
naming the available stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pybuildless.dockerfile import instructions as ins
from pybuildless.dockerfile.mounts import MountError, parse_mount
from pybuildless.dockerfile.parser import Dockerfile, Stage
from pybuildless.errors import DockerfileError


@dataclass(frozen=True)
class StageBase:
    """What a stage starts from: another stage (``stage`` index), an image, or scratch."""

    stage: int | None = None
    image: str | None = None
    platform: str | None = None

    @property
    def is_scratch(self) -> bool:
        return self.stage is None and self.image == "scratch"


@dataclass(frozen=True)
class BuildPlan:
    """Which stages a build runs, in what order, and the images they need."""

    target: int
    order: tuple[int, ...]  # stage indexes to build, dependencies first
    levels: tuple[tuple[int, ...], ...]
    deps: Mapping[int, frozenset[int]]  # stage -> stages it needs
    bases: Mapping[int, StageBase]  # resolved FROM of each planned stage
    images: frozenset[str]  # external images referenced by FROM or --from

    def skipped(self, dockerfile: Dockerfile) -> list[int]:
        return [s.index for s in dockerfile.stages if s.index not in self.order]


def resolve_target(dockerfile: Dockerfile, target: str | None) -> int:
    """The index of the ``--target`` stage (case-insensitive), the last stage by default."""
    if not target:
        return len(dockerfile.stages) - 1
    low = target.lower()
    for stage in dockerfile.stages:
        if stage.name == low:
            return stage.index
    names = [s.name for s in dockerfile.stages if s.name]
    listing = ", ".join(names) if names else "none (no stage has a name)"
    raise DockerfileError(f"target stage {target!r} could not be found; available stages: {listing}",
                          path=dockerfile.path)  # fmt: skip


def _stage_ref(dockerfile: Dockerfile, current: Stage, ref: str, inst: ins.Instruction) -> int | None:
    """Resolve a ``--from`` value: an earlier stage index, or None for an image reference."""
    low = ref.lower()
    for stage in dockerfile.stages:
        if stage.name == low:
            if stage.index >= current.index:
                raise inst.error(f"stage {ref!r} is referenced before (or by) its own definition")
            return stage.index
    if ref.isdigit():
        index = int(ref)
        if index >= current.index:
            raise inst.error(f"invalid stage index {index}: only earlier stages (< {current.index}) can be used")
        return index
    return None


def resolve_base(dockerfile: Dockerfile, stage: Stage, meta_env: Mapping[str, str]) -> StageBase:
    """Expand the stage's FROM with meta ARGs and decide stage vs image."""
    expanded = stage.from_.expand(meta_env)
    low = expanded.image.lower()
    for other in dockerfile.stages[: stage.index]:
        if other.name == low:
            return StageBase(stage=other.index, platform=expanded.platform)
    for other in dockerfile.stages[stage.index + 1 :]:
        if other.name == low:
            raise stage.from_.error(f"stage {expanded.image!r} is used before it is defined")
    return StageBase(image=expanded.image, platform=expanded.platform)


def stage_dependencies(
    dockerfile: Dockerfile, stage: Stage, base: StageBase
) -> tuple[set[int], set[str]]:
    """(stage indexes, image references) that ``stage`` needs."""
    stages: set[int] = set()
    images: set[str] = set()
    if base.stage is not None:
        stages.add(base.stage)
    elif base.image and base.image != "scratch":
        images.add(base.image)
    for inst in stage.instructions:
        refs: list[str] = []
        if inst.keyword == "COPY" and inst.from_:  # type: ignore[attr-defined]
            refs.append(inst.from_)  # type: ignore[attr-defined]
        elif inst.keyword == "RUN":
            for spec in inst.mounts:
                if "$" in spec and "from=" not in spec.lower():
                    continue
                try:
                    mount = parse_mount(spec)
                except MountError:
                    continue  # depends on variables; validated at dispatch
                if mount.from_:
                    refs.append(mount.from_)
        for ref in refs:
            index = _stage_ref(dockerfile, stage, ref, inst)
            if index is None:
                images.add(ref)
            else:
                stages.add(index)
    return stages, images


def plan_build(dockerfile: Dockerfile, target: str | None = None, meta_env: Mapping[str, str] | None = None) -> BuildPlan:
    target_index = resolve_target(dockerfile, target)
    env = dict(meta_env or {})
    deps: dict[int, frozenset[int]] = {}
    bases: dict[int, StageBase] = {}
    images: set[str] = set()
    pending = [target_index]
    while pending:
        index = pending.pop()
        if index in deps:
            continue
        stage = dockerfile.stages[index]
        base = resolve_base(dockerfile, stage, env)
        needed, imgs = stage_dependencies(dockerfile, stage, base)
        bases[index] = base
        deps[index] = frozenset(needed)
        images |= imgs
        pending.extend(needed)
    # Dependencies always point to earlier stages, so index order is topological.
    order = tuple(sorted(deps))
    level: dict[int, int] = {}
    for index in order:
        level[index] = 1 + max((level[d] for d in deps[index]), default=-1)
    levels = tuple(
        tuple(i for i in order if level[i] == n) for n in range(max(level.values()) + 1)
    )
    return BuildPlan(target_index, order, levels, deps, bases, frozenset(images))
