"""From text to typed instructions and stages.

Public API::

    parse_dockerfile(text, path="Dockerfile") -> Dockerfile
    load_dockerfile(path)            # a file path, or "-" for stdin
    parse_onbuild_triggers(triggers, escape="\\\\", path="ONBUILD") -> list[Instruction]

``Dockerfile`` holds the directives, the meta (global) ARGs before the first FROM, the stages
(each: index, lower-cased name or None, its ``From`` and the following instructions) and the
parse warnings. Errors are ``DockerfileError`` naming ``path:line``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from pybuildless.dockerfile import instructions as ins
from pybuildless.dockerfile.instruction_parser import InstructionBuilder
from pybuildless.dockerfile.syntax import Directives, split_instructions
from pybuildless.errors import DockerfileError


@dataclass(frozen=True)
class Stage:
    """One build stage: ``FROM`` plus the instructions up to the next ``FROM``."""

    index: int
    name: str | None
    from_: ins.From
    instructions: tuple[ins.Instruction, ...]


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: its directives, global ARGs and stages, and its text for excerpts."""

    path: str
    directives: Directives
    meta_args: tuple[ins.Arg, ...]
    stages: tuple[Stage, ...]
    warnings: tuple[str, ...] = ()
    text: str = field(default="", repr=False, compare=False)  # for error excerpts

    @property
    def escape(self) -> str:
        return self.directives.escape

    def stage_by_name_or_index(self, ref: str) -> Stage | None:
        """A stage by (case-insensitive) name or decimal index, else None (an image ref)."""
        low = ref.lower()
        for stage in self.stages:
            if stage.name == low:
                return stage
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None


def parse_dockerfile(text: str, path: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile ``text``; ``path`` is used in error messages (which carry ``text``
    as ``source_text``, for an excerpt)."""
    try:
        return _parse(text, path)
    except DockerfileError as exc:
        if exc.source_text is None and exc.path == path:
            exc.source_text = text
        raise


def _parse(text: str, path: str) -> Dockerfile:
    split = split_instructions(text, path)
    builder = InstructionBuilder(path, split.directives.escape)
    meta: list[ins.Arg] = []
    stages: list[Stage] = []
    current: ins.From | None = None
    body: list[ins.Instruction] = []
    names: dict[str, int] = {}
    for raw in split.instructions:
        inst = builder.build(raw)
        if isinstance(inst, ins.From):
            if current is not None:
                stages.append(Stage(len(stages), current.name, current, tuple(body)))
            if inst.name is not None:
                if inst.name in names:
                    raise builder.fail(raw, f"duplicate stage name {inst.name!r}")
                names[inst.name] = len(stages)
            current, body = inst, []
        elif current is None:
            if not isinstance(inst, ins.Arg):
                raise builder.fail(raw, f"{raw.keyword} before the first FROM: only ARG may precede FROM")
            meta.append(inst)
        else:
            body.append(inst)
    if current is None:
        raise DockerfileError("no build stage: the Dockerfile has no FROM instruction", path=path)
    stages.append(Stage(len(stages), current.name, current, tuple(body)))
    return Dockerfile(path, split.directives, tuple(meta), tuple(stages), split.warnings, text)


def load_dockerfile(path: str) -> Dockerfile:
    """Read and parse a Dockerfile from ``path`` (``"-"`` reads stdin)."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
            name = "<stdin>"
        else:
            with open(path, "rb") as fh:
                data = fh.read()
            name = path
    except OSError as exc:
        raise DockerfileError(f"cannot read Dockerfile: {exc.strerror}", path=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DockerfileError(f"not valid UTF-8 at byte {exc.start}", path=name) from None
    return parse_dockerfile(text, name)


def parse_onbuild_triggers(
    triggers: list[str], escape: str = "\\", path: str = "ONBUILD"
) -> list[ins.Instruction]:
    """Parse a base image's ``Config.OnBuild`` triggers for replay right after ``FROM``.

    Each trigger is parsed with the *downstream* escape char; errors name ``path``, the
    trigger's 1-based position and the line within the trigger's own text: BuildKit parses
    each trigger on its own (moby/buildkit 73ed6825c4b7569379ef89df0aedcdbe64473d31
    frontend/dockerfile/dockerfile2llb/convert.go initOnBuildTriggers:
    ``parser.Parse(strings.NewReader(trigger))``), so nothing precedes its first line.
    """
    builder = InstructionBuilder(path, escape)
    out: list[ins.Instruction] = []
    for number, trigger in enumerate(triggers, start=1):
        where = f"{path} trigger {number}"
        split = split_instructions(trigger, where, escape=escape)
        if len(split.instructions) != 1:
            raise DockerfileError("an ONBUILD trigger must hold exactly one instruction", path=where)
        raw = split.instructions[0]
        if raw.keyword == "ONBUILD":
            raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", path=where)
        if raw.keyword in ("FROM", "MAINTAINER"):
            raise DockerfileError(f"{raw.keyword} isn't allowed as an ONBUILD trigger", path=where)
        builder.path = where
        out.append(builder.build(raw))
    return out
