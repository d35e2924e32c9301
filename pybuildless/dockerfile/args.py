"""ARG and ENV scoping, driven instruction by instruction (BuildKit's ``convert.go`` rules).

Usage by the executor::

    glob = GlobalArgs.resolve(dockerfile.meta_args, build_args, platform_args("linux/arm64/v8"))
    from_ = stage.from_.expand(glob.env)                 # FROM sees meta ARGs only
    scope = StageEnv(glob, build_args, image_env=base_config_env)   # or parent_scope.child()
    for inst in stage.instructions:
        inst = scope.apply(inst)       # expands it; ARG/ENV also update the scope
        ... scope.run_env() for RUN, scope.image_env() for the config, scope.arg_history() ...

Rules:
- meta ARGs (before the first FROM) are evaluated in order, later ones may use earlier ones; a
  ``--build-arg`` replaces the value *without* expanding the default; they are visible in FROM
  only, unless a stage re-declares them (``ARG NAME`` without default re-imports the global);
- in-stage ``ARG``: build-arg value, else the default expanded with the current scope, else
  the global value of the same name, else *unset* (absent, not empty);
- ENV and ARG of the same name: the later declaration wins;
- ARG values are in the RUN environment but never in the image ``Env``;
- proxy build-args (``HTTP_PROXY``...) reach RUN without declaration;
- a stage ``FROM <stage>`` inherits that stage's ENV *and* declared ARGs (``child()``); an ``ARG
  NAME`` with no value of its own keeps the value already in scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from pybuildless.dockerfile import instructions as ins
from pybuildless.dockerfile.lex import WordError, process_word

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_ARGS = frozenset(
    name for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY") for name in (base, base.lower())
)
PLATFORM_ARG_NAMES = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                      "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT")  # fmt: skip
# Build-args BuildKit consumes itself: never reported as unused.
BUILTIN_ARGS = frozenset({"BUILDKIT_CACHE_MOUNT_NS", "BUILDKIT_CONTEXT_KEEP_GIT_DIR", "BUILDKIT_INLINE_CACHE",
                          "BUILDKIT_MULTI_PLATFORM", "BUILDKIT_SANDBOX_HOSTNAME", "BUILDKIT_SYNTAX",
                          "SOURCE_DATE_EPOCH"}) | PROXY_ARGS  # fmt: skip


def _split_platform(text: str) -> tuple[str, str, str]:
    parts = text.split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"invalid platform {text!r} (expected os/arch[/variant])")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


def platform_args(target: str = "linux/amd64", build: str | None = None) -> dict[str, str]:
    """The automatic platform ARGs for a target platform (and build platform, default = target)."""
    build = build or target
    values: dict[str, str] = {}
    for prefix, text in (("TARGET", target), ("BUILD", build)):
        os_, arch, variant = _split_platform(text)
        values[prefix + "PLATFORM"] = "/".join(p for p in (os_, arch, variant) if p)
        values[prefix + "OS"] = os_
        values[prefix + "ARCH"] = arch
        values[prefix + "VARIANT"] = variant
    return values


def _word(inst: ins.Instruction, word: str, env: Mapping[str, str]) -> str:
    try:
        return process_word(word, env, inst.escape)
    except WordError as exc:
        raise inst.error(exc.bare_message) from None


@dataclass(frozen=True)
class GlobalArgs:
    """The resolved global scope: platform ARGs plus meta ARGs (``None`` = declared but unset)."""

    values: Mapping[str, str | None]

    @classmethod
    def resolve(
        cls,
        meta_args: Sequence[ins.Arg],
        build_args: Mapping[str, str],
        platform: Mapping[str, str] | None = None,
    ) -> GlobalArgs:
        values: dict[str, str | None] = dict(platform or {})
        for inst in meta_args:
            env = {k: v for k, v in values.items() if v is not None}
            for key, default in inst.pairs:  # meta ARG names are taken as written (buildMetaArgs)
                if key in build_args:
                    values[key] = build_args[key]
                elif default is not None:
                    values[key] = _word(inst, default, env)
                elif key not in values:
                    values[key] = None
        return cls(values)

    @property
    def env(self) -> dict[str, str]:
        """The expansion environment for FROM lines (set values only)."""
        return {k: v for k, v in self.values.items() if v is not None}


class StageEnv:
    """Tracks ENV (ordered, replace-in-place) and declared ARGs through one stage."""

    def __init__(
        self,
        globals_: GlobalArgs,
        build_args: Mapping[str, str],
        image_env: Iterable[str] = (),
    ) -> None:
        self.globals = globals_
        self.build_args = dict(build_args)
        self._env: dict[str, str] = {}
        for item in image_env:
            key, _, value = item.partition("=")
            self._env[key] = value
        if "PATH" not in self._env:
            # BuildKit sets PATH for every stage whose config lacks it, a stage FROM another
            # stage included (dockerfile2llb/convert.go@b985e231 vendored in moby, "make sure
            # that PATH is always set")
            self._env["PATH"] = DEFAULT_PATH
        self._args: dict[str, str | None] = {}

    def child(self, image_env: Iterable[str] | None = None) -> StageEnv:
        """The scope for a stage ``FROM`` this one: same ENV (or ``image_env``) and ARGs."""
        other = StageEnv(self.globals, self.build_args, image_env if image_env is not None else self.image_env())
        other._args = dict(self._args)
        return other

    # -- views -----------------------------------------------------------------------
    def expansion_env(self) -> dict[str, str]:
        """Variables visible to the next instruction's word expansion."""
        merged = dict(self._env)
        merged.update({k: v for k, v in self._args.items() if v is not None})
        return merged

    def run_env(self) -> dict[str, str]:
        """The environment for RUN: ENV, declared ARGs with values, and proxy build-args."""
        env = {k: v for k, v in self.build_args.items() if k in PROXY_ARGS}
        env.update(self.expansion_env())
        return env

    def image_env(self) -> list[str]:
        """The config ``Env`` list (ARGs never appear here)."""
        return [f"{k}={v}" for k, v in self._env.items()]

    def arg_history(self) -> list[str]:
        """``KEY=VALUE`` of declared ARGs with values, as in history ``RUN |N a=1 ...``."""
        return [f"{k}={v}" for k, v in self._args.items() if v is not None]

    # -- mutation ----------------------------------------------------------------------
    def apply(self, inst: ins.Instruction) -> ins.Instruction:
        """Expand ``inst`` with the current scope; ARG and ENV then update the scope."""
        env = self.expansion_env()
        if isinstance(inst, ins.Arg):
            return self._declare(inst, env)
        if inst.keyword == "ENV":  # keywords, not classes: an absent kind's module stays unloaded
            expanded = inst.expand(env)  # type: ignore[attr-defined]
            for key, value in expanded.pairs:
                self._env[key] = value  # dict keeps the original position of an existing key
                self._args.pop(key, None)  # a later ENV shadows an earlier ARG of the same name
            return expanded
        if inst.keyword in ins.EXPANDING_KEYWORDS:
            return inst.expand(env)  # type: ignore[attr-defined]
        return inst

    def _declare(self, inst: ins.Arg, env: Mapping[str, str]) -> ins.Arg:
        pairs = []
        for raw_key, default in inst.pairs:
            key = _word(inst, raw_key, env)  # a stage ARG's name is expanded (ArgCommand.Expand)
            if key in self.build_args:
                value: str | None = self.build_args[key]
            elif default is not None:
                value = _word(inst, default, env)
            else:
                value = self.globals.values.get(key)
            if value is None:
                # No value of its own: what the scope already holds stays (an earlier ARG here,
                # or the parent stage's for FROM <stage>). BuildKit v0.8's dispatchArg
                # (dockerfile2llb/convert.go@eeb7b65ab7d6) only AddEnv()s a value it has, and a
                # child stage starts from its parent's LLB state (d.state = d.base.state),
                # whose env holds the parent's ARG values.
                value = self._args.get(key)
            self._args.pop(key, None)
            self._args[key] = value
            pairs.append((key, value))
        return replace(inst, pairs=tuple(pairs))


def unused_build_args(
    meta_args: Sequence[ins.Arg], stages: Iterable[Sequence[ins.Instruction]], build_args: Iterable[str]
) -> list[str]:
    """Build-arg names no ARG declares (in the meta ARGs or the given stages' instructions),
    excluding BuildKit's built-in and proxy args, sorted; the executor warns about them."""
    declared: set[str] = set()
    for inst in list(meta_args) + [i for body in stages for i in body if isinstance(i, ins.Arg)]:
        declared.update(key for key, _ in inst.pairs)
    return sorted(name for name in set(build_args) if name not in declared and name not in BUILTIN_ARGS)
