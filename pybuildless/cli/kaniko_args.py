"""Kaniko's command-line grammar (cobra + pflag) in front of click.

Kaniko's executor parses its arguments with spf13/pflag, and real CI configs lean
on pflag's rules, which click does not share. ``normalise`` reads an argument list
the way pflag does and hands click an equivalent list in the one form click reads
(``--name=value``, and ``--flag`` / ``--no-flag`` for booleans). The rules, from
spf13/pflag flag.go (parseArgs, parseLongArg, parseSingleShortArg; v1.0.6, vendored
by Kaniko v1.24.0) and spf13/cobra command.go (stripFlags, legacyArgs; v1.9.1):

- ``--name=value`` and ``--name value``; a boolean takes no separate value
  (``--cache`` is true) but ``--cache=VALUE`` is read by Go's strconv.ParseBool.
- ``-f value``, ``-fvalue`` and ``-f=value`` for a shorthand.
- ``--`` ends the flags; Kaniko ignores what follows. ``-h``/``--help`` show the help.
- Words that are not flags are cobra "commands": empty strings are dropped
  (stripFlags skips ``""``, so ``"${CACHE_FLAG:-}"`` left by a CI template is
  harmless); ``version`` is Kaniko's version subcommand; any other word is
  ``unknown command "WORD" for "executor"`` (legacyArgs), as in Kaniko.

Beyond pflag: ``--no-NAME`` negates a boolean that has such a spelling in click,
and Kaniko's deprecated camelCase spellings are mapped onto their kebab-case flag
with the warning Kaniko prints (root.go checkNoDeprecatedFlags).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from pybuildless.errors import UsageError

# strconv.ParseBool (Go src/strconv/atob.go): exactly these spellings.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# Kaniko v1.24.0 cmd/executor/cmd/root.go: deprecated names -> the flag they stand for.
DEPRECATED_ALIASES = {
    "tarPath": "tar-path",
    "snapshotMode": "snapshot-mode",
    "customPlatform": "custom-platform",
    "whitelist-var-run": "ignore-var-run",
}

VERSION_COMMAND = "version"


def parse_bool(value: str, flag: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"invalid argument {value!r} for {flag!r} flag: strconv.ParseBool: parsing {value!r}: "
                     "invalid syntax (use true or false)")


def parse_go_int(value: str, flag: str) -> int:
    """strconv.ParseInt(s, 0, 64), as pflag's int flags read it: 10, 0x1f, 0o17, 017, 0b11, 1_000."""
    text = value.strip()
    try:
        sign = -1 if text.startswith("-") else 1
        body = text.lstrip("+-")
        if "_" in body and not body[:1].isdigit():
            raise ValueError
        if len(body) > 1 and body[0] == "0" and body[1].isdigit():
            return sign * int(body.replace("_", ""), 8)  # Go's leading-zero octal
        return sign * int(body, 0)
    except ValueError:
        raise UsageError(f"invalid argument {value!r} for {flag!r} flag: expected an integer") from None


@dataclass(frozen=True)
class _Flag:
    """One Kaniko flag as pflag spells it, and the click option it maps to."""

    option: click.Option
    is_bool: bool
    is_int: bool
    primary: str  # the spelling handed to click
    negation: str | None  # click's "--no-x" for a boolean, if it has one


@dataclass
class Normalised:
    """A Kaniko command line rewritten for click, with the notes to log about it."""

    args: list[str]
    notes: list[str] = field(default_factory=list)  # warnings to log once logging is set up
    version: bool = False  # `executor version`


def _table(command: click.Command) -> tuple[dict[str, _Flag], dict[str, _Flag], dict[str, _Flag]]:
    longs: dict[str, _Flag] = {}
    shorts: dict[str, _Flag] = {}
    negations: dict[str, _Flag] = {}
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        is_bool = bool(param.is_flag) and not param.count
        is_int = isinstance(param.type, (click.types.IntParamType, click.IntRange))
        names = [o for o in param.opts if o.startswith("--")]
        secondary = [o for o in param.secondary_opts if o.startswith("--")]
        flag = _Flag(param, is_bool, is_int, names[0] if names else param.opts[0], secondary[0] if secondary else None)
        for opt in param.opts:
            if opt.startswith("--"):
                longs[opt[2:]] = flag
            elif opt.startswith("-") and len(opt) == 2:
                shorts[opt[1]] = flag
        for opt in secondary:
            negations[opt[2:]] = flag
    return longs, shorts, negations


class _Builder:
    """Collects values in order; booleans keep their last value (pflag: last one wins)."""

    def __init__(self) -> None:
        self.items: list[tuple[_Flag, str | bool]] = []

    def add(self, flag: _Flag, value: str | bool, shown: str) -> None:
        if flag.is_bool:
            if not isinstance(value, bool):
                value = parse_bool(value, shown)
            self.items = [(f, v) for f, v in self.items if f is not flag]
        elif flag.is_int:
            value = str(parse_go_int(str(value), shown))
        self.items.append((flag, value))

    def render(self) -> list[str]:
        out: list[str] = []
        for flag, value in self.items:
            if not flag.is_bool:
                out.append(f"{flag.primary}={value}")
            elif value:
                out.append(flag.primary)
            elif flag.negation:
                out.append(flag.negation)
            elif flag.option.default is True:
                raise UsageError(f"{flag.primary}=false cannot be expressed")  # no such option today
            # else: false is the default; nothing to say
        return out


def normalise(command: click.Command, args: list[str], prog: str = "executor") -> Normalised:
    """Read ``args`` by pflag's rules; return the equivalent click argument list."""
    longs, shorts, negations = _table(command)
    built = _Builder()
    result = Normalised(args=[])
    words: list[str] = []
    rest = list(args)
    while rest and "--help" not in result.args:  # pflag stops at -h/--help
        arg = rest.pop(0)
        if arg == "--":
            break  # cobra hands what follows to Run as arguments, and Kaniko's Run ignores them
        if len(arg) < 2 or arg[0] != "-":
            if arg:  # cobra's stripFlags drops empty strings
                words.append(arg)
            continue
        if arg.startswith("--"):
            _long(arg, rest, longs, negations, built, result)
        else:
            _shorts(arg, rest, shorts, built, result)
    if "--help" in result.args:
        return result
    if words:
        if words == [VERSION_COMMAND]:
            result.version = True
            return result
        raise UsageError(f'unknown command "{words[0]}" for "{prog}" (a flag value must follow its flag; '
                         "booleans take --flag or --flag=true|false)")
    result.args = built.render()
    return result


def _long(arg: str, rest: list[str], longs, negations, built: _Builder, result: Normalised) -> None:
    body = arg[2:]
    if body[:1] in ("-", "="):
        raise UsageError(f"bad flag syntax: {arg}")
    name, has_value, value = body.partition("=")
    if name == "help":
        result.args.append("--help")
        return
    if name in DEPRECATED_ALIASES:
        canonical = DEPRECATED_ALIASES[name]
        result.notes.append(f"Flag --{name} is deprecated. Use: --{canonical}")
        name = canonical
    flag = longs.get(name)
    if flag is None and name in negations:
        # --no-NAME: the negative spelling of a boolean (an extra beyond pflag)
        neg = negations[name]
        on = parse_bool(value, f"--{name}") if has_value else True
        built.add(neg, not on, f"--{name}")
        return
    if flag is None:
        raise UsageError(f"unknown flag: --{name}")
    if has_value:
        built.add(flag, value, f"--{name}")
    elif flag.is_bool:
        built.add(flag, True, f"--{name}")
    elif rest:
        built.add(flag, rest.pop(0), f"--{name}")
    else:
        raise UsageError(f"flag needs an argument: --{name}")


def _shorts(arg: str, rest: list[str], shorts, built: _Builder, result: Normalised) -> None:
    letters = arg[1:]
    while letters:
        c, letters = letters[0], letters[1:]
        if c == "h":
            result.args.append("--help")
            return
        flag = shorts.get(c)
        if flag is None:
            raise UsageError(f"unknown shorthand flag: {c!r} in {arg}")
        shown = f"-{c}"
        if letters.startswith("="):  # -f=value
            built.add(flag, letters[1:], shown)
            return
        if flag.is_bool:  # -x (no value), then the next letters are flags too
            built.add(flag, True, shown)
            continue
        if letters:  # -fvalue
            built.add(flag, letters, shown)
            return
        if not rest:
            raise UsageError(f"flag needs an argument: {c!r} in {arg}")
        built.add(flag, rest.pop(0), shown)
        return


class KanikoCommand(click.Command):
    """A click command whose arguments are read by Kaniko's (pflag's) rules first."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        normalised = normalise(self, list(args), prog=ctx.info_name or "executor")
        ctx.meta["kaniko_notes"] = normalised.notes
        if normalised.version:
            from pybuildless import __version__

            click.echo(f"pybuildless version : {__version__} (Kaniko's executor command line)")
            ctx.exit(0)
        return super().parse_args(ctx, normalised.args)
