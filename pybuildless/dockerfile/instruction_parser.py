"""One raw instruction to its typed instruction: flags, argument counts and forms, per keyword.

BuildKit's ``frontend/dockerfile/instructions/parse.go`` rules; ``parser`` runs this over every
instruction of a file (and over ONBUILD triggers) and groups the results into stages.
Errors are ``DockerfileError`` naming ``path:line``.
"""

from __future__ import annotations

import re

from pybuildless.dockerfile import instructions as ins
from pybuildless.dockerfile.mounts import MountError, parse_go_duration, parse_mount
from pybuildless.dockerfile.syntax import (
    RawInstruction,
    parse_heredoc_word,
    parse_json_array,
    parse_words,
    split_whitespace,
)
from pybuildless.errors import DockerfileError

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_ONBUILD_PREFIX = re.compile(r"(?i)^\s*ONBUILD\s*")
_MS = 1_000_000

# Flag name -> kind: "str", "bool" or "list" (repeatable).
FLAG_SPECS: dict[str, dict[str, str]] = {
    "FROM": {"platform": "str"},
    "RUN": {"mount": "list", "network": "str", "security": "str"},
    "COPY": {"from": "str", "chown": "str", "chmod": "str", "link": "bool", "parents": "bool", "exclude": "list"},
    "ADD": {"chown": "str", "chmod": "str", "link": "bool", "keep-git-dir": "bool", "checksum": "str",
            "exclude": "list", "unpack": "bool"},  # fmt: skip
    "HEALTHCHECK": {"interval": "str", "timeout": "str", "start-period": "str", "start-interval": "str",
                    "retries": "str"},  # fmt: skip
}
KNOWN_KEYWORDS = frozenset(
    "FROM RUN CMD ENTRYPOINT SHELL COPY ADD ENV ARG LABEL EXPOSE VOLUME USER WORKDIR STOPSIGNAL "
    "HEALTHCHECK ONBUILD MAINTAINER".split()
)



def parse_flags(raw: RawInstruction, path: str) -> dict[str, object]:
    spec = FLAG_SPECS.get(raw.keyword, {})
    values: dict[str, object] = {}
    for word in raw.flags:
        name, eq, value = word[2:].partition("=") if word.startswith("--") else (word, "", "")
        if not word.startswith("--"):
            raise DockerfileError(f"arg should start with -- : {word}", path=path, line=raw.start_line)
        kind = spec.get(name)
        if kind is None:
            raise DockerfileError(f"unknown flag: {name}", path=path, line=raw.start_line)
        if name in values and kind != "list":
            raise DockerfileError(f"duplicate flag specified: {name}", path=path, line=raw.start_line)
        if kind == "bool":
            if eq and not value:
                raise DockerfileError(f"missing a value on flag: {name}", path=path, line=raw.start_line)
            if value.lower() not in ("", "true", "false"):
                raise DockerfileError(
                    f"expecting boolean value for flag {name}, not: {value}", path=path, line=raw.start_line
                )
            values[name] = value.lower() != "false"
        elif not eq:
            raise DockerfileError(f"missing a value on flag: {name}", path=path, line=raw.start_line)
        elif kind == "list":
            values.setdefault(name, [])
            values[name].append(value)  # type: ignore[union-attr]
        else:
            values[name] = value
    return values


class InstructionBuilder:
    """Turns one RawInstruction into its typed instruction."""

    def __init__(self, path: str, escape: str) -> None:
        self.path = path
        self.escape = escape

    def fail(self, raw: RawInstruction, message: str) -> DockerfileError:
        return DockerfileError(message, path=self.path, line=raw.start_line)

    def build(self, raw: RawInstruction) -> ins.Instruction:
        if raw.keyword not in KNOWN_KEYWORDS:
            raise self.fail(raw, f"unknown instruction: {raw.keyword}")
        flags = parse_flags(raw, self.path)
        common = {"path": self.path, "line": raw.start_line, "end_line": raw.end_line,
                  "original": raw.original.strip(), "escape": self.escape}  # fmt: skip
        method = getattr(self, "_" + raw.keyword.lower())
        return method(raw, flags, common)

    def _require(self, raw: RawInstruction, items: list, minimum: int = 1) -> None:
        if len(items) < minimum:
            word = "argument" if minimum == 1 else "arguments"
            count = {1: "one", 2: "two"}.get(minimum, str(minimum))
            raise self.fail(raw, f"{raw.keyword} requires at least {count} {word}")

    def _json(self, raw: RawInstruction) -> list[str] | None:
        try:
            return parse_json_array(raw.args)
        except ValueError as exc:
            raise self.fail(raw, str(exc)) from None

    def _command(self, raw: RawInstruction) -> ins.CommandLine:
        array = self._json(raw)
        if array is not None:
            return ins.CommandLine(tuple(array), True)
        if not raw.args:
            raise self.fail(raw, f"{raw.keyword} requires at least one argument")
        return ins.CommandLine((raw.args,), False)

    def _from(self, raw, flags, common):
        words = split_whitespace(raw.args)
        name = None
        if len(words) == 3 and words[1].lower() == "as":
            name = words[2].lower()
            if not _STAGE_NAME.match(name):
                raise self.fail(
                    raw, f"invalid name for build stage: {words[2]!r}, name can't start with a number or contain symbols"
                )
        elif len(words) != 1:
            raise self.fail(raw, "FROM requires either one or three arguments")
        return ins.From(image=words[0], name=name, platform=flags.get("platform"), **common)

    def _run(self, raw, flags, common):
        network = flags.get("network")
        if network is not None and network not in ("default", "none", "host"):
            raise self.fail(raw, f"unsupported network mode {network!r} (use default, none or host)")
        security = flags.get("security")
        if security is not None and security not in ("sandbox", "insecure"):
            raise self.fail(raw, f"unsupported security mode {security!r} (use sandbox or insecure)")
        mounts = tuple(flags.get("mount", ()))
        for spec in mounts:
            self._check_mount(raw, spec)
        return ins.Run(command=self._command(raw), heredocs=raw.heredocs, mounts=mounts, network=network,
                       security=security, **common)  # fmt: skip

    def _check_mount(self, raw: RawInstruction, spec: str) -> None:
        if re.search(r"(?i)(^|,)\s*from=[^,]*\$", spec):
            raise self.fail(raw, "variable expansion is not supported for --mount=from, define a new stage "
                                 "with FROM using ARG from global scope as a workaround")  # fmt: skip
        if "$" in spec:
            return  # values depend on variables: validated when expanded at dispatch
        try:
            parse_mount(spec)
        except MountError as exc:
            raise self.fail(raw, str(exc)) from None

    def _cmd(self, raw, flags, common):
        return ins.Cmd(command=self._command(raw), **common)

    def _entrypoint(self, raw, flags, common):
        return ins.Entrypoint(command=self._command(raw), **common)

    def _shell(self, raw, flags, common):
        array = self._json(raw)
        if array is None:
            raise self.fail(raw, "SHELL requires the arguments to be in JSON form")
        self._require(raw, array)
        return ins.Shell(argv=tuple(array), **common)

    def _sources(self, raw, flags, common) -> dict[str, object]:
        array = self._json(raw)
        words = array if array is not None else split_whitespace(raw.args)
        self._require(raw, words, 2)
        *srcs, dest = words
        heredocs = list(raw.heredocs) if array is None else []
        if array is None and parse_heredoc_word(dest) is not None:
            raise self.fail(raw, f"{raw.keyword} cannot accept a heredoc as a destination")
        sources, inline = [], []
        for src in srcs:
            spec = parse_heredoc_word(src) if array is None else None
            if spec is not None and heredocs:
                doc = heredocs.pop(0)
                inline.append(ins.HeredocSource(spec.name, doc.body(), doc.expand))
            else:
                sources.append(src)
        return {"sources": tuple(sources), "dest": dest, "inline": tuple(inline), "chown": flags.get("chown"),
                "chmod": flags.get("chmod"), "link": bool(flags.get("link", False)),
                "excludes": tuple(flags.get("exclude", ())), "json": array is not None, **common}  # fmt: skip

    def _copy(self, raw, flags, common):
        source = flags.get("from")
        if source is not None and "$" in source:
            raise self.fail(raw, "variable expansion is not supported for --from, define a new stage with FROM "
                                 "using ARG from global scope as a workaround")  # fmt: skip
        return ins.Copy(from_=source, parents=bool(flags.get("parents", False)),
                        **self._sources(raw, flags, common))  # fmt: skip

    def _add(self, raw, flags, common):
        values = self._sources(raw, flags, common)
        checksum = flags.get("checksum")
        if checksum is not None and len(values["sources"]) != 1:  # type: ignore[arg-type]
            raise self.fail(raw, "checksum can't be specified for multiple sources")
        return ins.Add(checksum=checksum, keep_git_dir=flags.get("keep-git-dir"), unpack=flags.get("unpack"),
                       **values)  # fmt: skip

    def _pairs(self, raw) -> tuple[tuple[tuple[str, str], ...], bool]:
        words = parse_words(raw.args, self.escape)
        self._require(raw, words)
        if "=" not in words[0]:
            parts = re.split(r"[\t\v\f\r ]+", raw.args, maxsplit=1)
            if len(parts) < 2 or not parts[1]:
                raise self.fail(raw, f"{raw.keyword} must have two arguments")
            return ((parts[0], parts[1]),), True
        pairs = []
        for word in words:
            if "=" not in word:
                raise self.fail(raw, f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
            key, _, value = word.partition("=")
            if not key:
                raise self.fail(raw, f"{raw.keyword} names can not be blank")
            pairs.append((key, value))
        return tuple(pairs), False

    def _env(self, raw, flags, common):
        pairs, legacy = self._pairs(raw)
        return ins.Env(pairs=pairs, legacy=legacy, **common)

    def _label(self, raw, flags, common):
        pairs, legacy = self._pairs(raw)
        return ins.Label(pairs=pairs, legacy=legacy, **common)

    def _arg(self, raw, flags, common):
        words = parse_words(raw.args, self.escape)
        self._require(raw, words)
        pairs: list[tuple[str, str | None]] = []
        for word in words:
            key, eq, value = word.partition("=")
            if not key:
                raise self.fail(raw, "ARG names can not be blank")
            pairs.append((key, value if eq else None))
        return ins.Arg(pairs=tuple(pairs), **common)

    def _expose(self, raw, flags, common):
        ports = split_whitespace(raw.args)
        self._require(raw, ports)
        return ins.Expose(ports=tuple(ports), **common)

    def _volume(self, raw, flags, common):
        array = self._json(raw)
        paths = array if array is not None else split_whitespace(raw.args)
        self._require(raw, paths)
        return ins.Volume(paths=tuple(paths), **common)

    def _single(self, raw, cls, common):
        if not raw.args:
            raise self.fail(raw, f"{raw.keyword} requires exactly one argument")
        return cls(value=raw.args, **common)

    def _user(self, raw, flags, common):
        return self._single(raw, ins.User, common)

    def _workdir(self, raw, flags, common):
        return self._single(raw, ins.Workdir, common)

    def _stopsignal(self, raw, flags, common):
        return self._single(raw, ins.StopSignal, common)

    def _maintainer(self, raw, flags, common):
        if not raw.args:
            raise self.fail(raw, "MAINTAINER requires exactly one argument")
        return ins.Maintainer(name=raw.args, **common)

    def _healthcheck(self, raw, flags, common):
        kind, _, rest = raw.args.partition(" ")
        kind_upper = kind.strip().upper()
        rest = rest.strip()
        if kind_upper == "NONE":
            if rest or raw.flags:
                raise self.fail(raw, "HEALTHCHECK NONE takes no arguments")
            return ins.Healthcheck(test=("NONE",), **common)
        if kind_upper != "CMD":
            raise self.fail(raw, f"Unknown type {kind!r} in HEALTHCHECK (try CMD)")
        try:
            array = parse_json_array(rest)
        except ValueError as exc:
            raise self.fail(raw, str(exc)) from None
        if array is not None:
            test = ("CMD", *array)
        elif rest:
            test = ("CMD-SHELL", rest)
        else:
            raise self.fail(raw, "Missing command after HEALTHCHECK CMD")
        durations = {}
        for flag in ("interval", "timeout", "start-period", "start-interval"):
            text = flags.get(flag)
            if text is None:
                continue
            try:
                value = parse_go_duration(str(text))
            except ValueError as exc:
                raise self.fail(raw, f"--{flag}: {exc}") from None
            if value != 0 and value < _MS:
                raise self.fail(raw, f"{flag.capitalize()} {text!r} cannot be less than 1ms")
            durations[flag.replace("-", "_")] = value
        retries = 0
        if "retries" in flags:
            try:
                retries = int(str(flags["retries"]))
            except ValueError:
                raise self.fail(raw, f"--retries: invalid number {flags['retries']!r}") from None
            if retries < 0:
                raise self.fail(raw, f"--retries cannot be negative ({retries})")
        return ins.Healthcheck(test=test, retries=retries, **durations, **common)

    def _onbuild(self, raw, flags, common):
        inner = raw.args.split(None, 1)
        self._require(raw, inner)
        trigger_kw = inner[0].upper()
        if trigger_kw == "ONBUILD":
            raise self.fail(raw, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger_kw in ("MAINTAINER", "FROM"):
            raise self.fail(raw, f"{trigger_kw} isn't allowed as an ONBUILD trigger")
        trigger = _ONBUILD_PREFIX.sub("", raw.original.strip(), count=1)
        trigger += "".join(f"\n{doc.content}{doc.name}" for doc in raw.heredocs)
        return ins.Onbuild(trigger=trigger, **common)
