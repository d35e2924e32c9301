"""The lexical layer: directives, logical lines, heredoc bodies, flags, JSON vs shell form.

This follows BuildKit's ``parser/parser.go``, ``directives.go`` and ``line_parsers.go``:

- a UTF-8 BOM is stripped from the first line; CRLF and LF both end lines;
- parser directives (``syntax``, ``escape``, ``check``) are read only at the very top and
  scanning stops at the first line that is not a known directive (an empty line too);
- a line ending in the escape char (trailing blanks allowed) continues, unless the escape char
  is itself escaped; the escape char is removed and the next line's leading blanks are kept;
  comment lines and empty lines inside a continuation are dropped (the latter with a warning);
- heredoc bodies (``<<EOF``, ``<<-EOF``, quoted delimiters) follow RUN/COPY/ADD lines (also
  under ONBUILD) in shell form and are read raw up to their terminator line.

``dockerfile-parse`` 2.0.1 splits lines the same way for plain files but mishandles heredocs,
empty continuation lines, escaped escapes, BOMs and ``# check``; instead of patching its output
line by line, this module does the splitting itself (``tests/test_dockerfile_parser.py``
cross-checks the two on files where ``dockerfile-parse`` is right).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field

from pybuildless.dockerfile.lex import WordError, process_word_with_matches
from pybuildless.errors import DockerfileError

log = logging.getLogger(__name__)

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")
_HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})
_MAX_LINE_BYTES = 64 * 1024  # bufio.MaxScanTokenSize in BuildKit's scanner


@dataclass(frozen=True)
class Heredoc:
    """One heredoc: delimiter ``name``, raw ``content`` (each line ends in ``\\n``)."""

    name: str
    content: str
    expand: bool = True  # False when any part of the delimiter was quoted
    chomp: bool = False  # ``<<-``: strip leading tabs from body lines
    fd: int = 0

    def body(self) -> str:
        """The content as the file gets it: tabs stripped for ``<<-``."""
        if not self.chomp:
            return self.content
        return "".join(line.lstrip("\t") for line in self.content.splitlines(keepends=True))


@dataclass(frozen=True)
class Directives:
    """Parser directives found at the top of the file."""

    escape: str = "\\"
    syntax: str | None = None
    check: str | None = None


@dataclass(frozen=True)
class RawInstruction:
    """One logical instruction before semantic parsing.

    ``keyword`` is upper-cased; ``args`` is the text after the flags; ``flags`` the raw
    ``--name[=value]`` words (quotes removed); ``original`` the whole logical line.
    """

    keyword: str
    args: str
    flags: tuple[str, ...]
    original: str
    start_line: int
    end_line: int
    heredocs: tuple[Heredoc, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class SplitResult:
    """A Dockerfile split into parser directives, instructions and warnings."""

    directives: Directives
    instructions: tuple[RawInstruction, ...]
    warnings: tuple[str, ...]


def _physical_lines(text: str) -> list[str]:
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the scanner yields no token after a final newline
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_directives(lines: list[str], path: str) -> Directives:
    found: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        m = _DIRECTIVE.match(line.lstrip(" \t"))
        if not m or m.group(1).lower() not in _KNOWN_DIRECTIVES:
            break
        key = m.group(1).lower()
        if key in found:
            raise DockerfileError(f"only one {key} parser directive can be used", path=path, line=number)
        found[key] = m.group(2)
        if key == "escape" and m.group(2) not in ("\\", "`"):
            raise DockerfileError(f"invalid escape token '{m.group(2)}' does not match ` or \\", path=path, line=number)
    return Directives(escape=found.get("escape", "\\"), syntax=found.get("syntax"), check=found.get("check"))


def _is_comment(line: str) -> bool:
    return line.lstrip(" \t\v\f\r").startswith("#")


def _continuation(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")


def _trim_continuation(line: str, pattern: re.Pattern[str]) -> tuple[str, bool]:
    """Return (line without the continuation char, is_end_of_instruction)."""
    if pattern.search(line):
        return pattern.sub(lambda m: m.group(1) or "", line, count=1), False
    return line, True


def split_instructions(text: str, path: str = "Dockerfile", *, escape: str | None = None) -> SplitResult:
    """Split ``text`` into directives and raw logical instructions with 1-based line spans.

    ``escape``, when given, is the escape char of a text that is not a file of its own (an
    ONBUILD trigger takes the downstream file's): it wins over a directive in the text.
    """
    lines = _physical_lines(text)
    for number, line in enumerate(lines, start=1):
        if len(line.encode("utf-8", "surrogatepass")) > _MAX_LINE_BYTES:
            raise DockerfileError("line too long (over 64 KiB)", path=path, line=number)
    directives = parse_directives(lines, path)
    if escape is not None:
        directives = Directives(escape, directives.syntax, directives.check)
    cont = _continuation(directives.escape)
    out: list[RawInstruction] = []
    warnings: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].lstrip(" \t\v\f\r")
        i += 1
        start = i
        if _is_comment(line) or not line.strip():
            continue
        joined, end = _trim_continuation(line, cont)
        parts = [joined]
        empty_continuation = False
        while not end and i < len(lines):
            nxt = lines[i]
            i += 1
            if _is_comment(nxt):
                continue
            if not nxt.strip(" \t\v\f\r\n"):
                empty_continuation = True
                continue
            piece, end = _trim_continuation(nxt, cont)
            parts.append(piece)
        logical = "".join(parts)
        if not logical.strip():
            continue
        inst_warnings = []
        if empty_continuation:
            msg = f"{path}:{start}: empty continuation line (will become an error in a future release)"
            inst_warnings.append(msg)
            warnings.append(msg)
            log.warning("%s", msg)
        keyword, flags, args = split_command(logical, path, start)
        heredocs: list[Heredoc] = []
        if _may_have_heredocs(keyword, args) and "<<" in logical:
            for spec in heredocs_in_line(args):
                body: list[str] = []
                while True:
                    if i >= len(lines):
                        raise DockerfileError("unterminated heredoc", path=path, line=start)
                    raw = lines[i]
                    i += 1
                    candidate = raw.lstrip("\t") if spec.chomp else raw
                    if candidate == spec.name:
                        break
                    body.append(raw + "\n")
                heredocs.append(Heredoc(spec.name, "".join(body), spec.expand, spec.chomp, spec.fd))
        out.append(
            RawInstruction(keyword, args, tuple(flags), logical, start, i, tuple(heredocs), tuple(inst_warnings))
        )
    if not out:
        raise DockerfileError("file with no instructions", path=path, line=len(lines) or None)
    return SplitResult(directives, tuple(out), tuple(warnings))


def _may_have_heredocs(keyword: str, args: str) -> bool:
    if keyword == "ONBUILD":
        inner = _WHITESPACE.split(args.strip(), maxsplit=1)
        if len(inner) < 2:
            return False
        keyword = inner[0].upper()
        _, args = extract_flags(inner[1])
    if keyword not in _HEREDOC_KEYWORDS:
        return False
    return parse_json_array(args) is None


def split_command(line: str, path: str, line_no: int) -> tuple[str, list[str], str]:
    """Split a logical line into (KEYWORD, flags, rest)."""
    cmdline = _WHITESPACE.split(line.strip(), maxsplit=1)
    keyword = cmdline[0].upper()
    if len(cmdline) < 2:
        return keyword, [], ""
    flags, rest = extract_flags(cmdline[1])
    return keyword, flags, rest.strip()


def extract_flags(line: str) -> tuple[list[str], str]:
    """Take leading ``--flag[=value]`` words (quotes removed, ``\\`` escapes); a bare ``--`` ends them."""
    words: list[str] = []
    pos = 0
    n = len(line)
    while True:
        while pos < n and line[pos].isspace():
            pos += 1
        if pos >= n:
            return words, ""
        if not line.startswith("--", pos):
            return words, line[pos:]
        word = []
        quoted = False
        quote = ""
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                    pos += 1
                    continue
            elif ch.isspace():
                break
            elif ch in "'\"":
                quote = ch
                quoted = True
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    quote = ""
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
        text = "".join(word)
        if text == "--":
            return words, line[pos:]
        if text or quoted:
            words.append(text)


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_JSON = json.JSONDecoder(parse_constant=_no_constants)


def parse_json_array(rest: str) -> list[str] | None:
    """Exec-form detection: a JSON array of strings, or None for shell form.

    Valid JSON with a non-string element is an error (``ValueError``); invalid JSON is shell form.
    Text after the array is ignored, as BuildKit v0.8 (Docker 20.10) does: parseJSON in
    frontend/dockerfile/parser/line_parsers.go@eeb7b65ab7d6 reads the array with
    ``json.NewDecoder(...).Decode``, which takes the first JSON value and never looks further
    (so ``CMD ["a"] # x`` is exec form ["a"]). Go's JSON has no NaN/Infinity: those are
    not JSON there, so the line stays shell form.
    """
    text = rest.lstrip()
    if not text.startswith("["):
        return None
    try:
        value, _ = _JSON.raw_decode(text)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise ValueError("dockerfile: JSON array must contain only strings")
    return value


def split_whitespace(rest: str) -> list[str]:
    rest = rest.strip(" \t\v\f\r")
    return _WHITESPACE.split(rest) if rest else []


def parse_words(rest: str, escape: str) -> list[str]:
    """Split on blanks outside quotes, keeping quotes and escapes in the words (ENV/LABEL/ARG)."""
    words: list[str] = []
    word = ""
    in_word = False
    quote = ""
    blank_ok = False
    i = 0
    n = len(rest)
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if not quote:
            if ch.isspace():
                if blank_ok or word:
                    words.append(word)
                word, blank_ok, in_word = "", False, False
                i += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
            elif ch == escape:
                if i + 1 == n:
                    i += 1
                    continue  # an escape at the end of the line is dropped
                word += ch
                i += 1
                ch = rest[i]
            word += ch
            i += 1
            continue
        if ch == quote:
            quote = ""
        elif ch == escape and quote != "'":
            if i + 1 == n:
                quote = ""
                i += 1
                continue
            word += ch
            i += 1
            ch = rest[i]
        word += ch
        i += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


@dataclass(frozen=True)
class HeredocSpec:
    """One heredoc opener: its delimiter, whether it expands variables, strips tabs, and its fd."""

    name: str
    expand: bool
    chomp: bool
    fd: int


def parse_heredoc_word(word: str) -> HeredocSpec | None:
    """Recognise one word (quotes still in it) as a heredoc opener, as BuildKit does."""
    m = _HEREDOC.match(word)
    if not m or not m.group(3):
        return None
    rest = m.group(3)
    try:
        plain = process_word_with_matches(rest, {}, "\\", skip_unset=True).words
        raw = process_word_with_matches(rest, {}, "\\", skip_unset=True, raw_quotes=True).words
    except WordError:
        return None
    if len(plain) != 1 or len(raw) != 1:
        return None
    quotes = lambda s: s.count("'") + s.count('"')  # noqa: E731
    # Quotes vanish in the unquoted reading only if part of the delimiter was quoted.
    return HeredocSpec(plain[0], quotes(plain[0]) == quotes(raw[0]), m.group(2) == "-", int(m.group(1) or 0))


def heredocs_in_line(args: str) -> list[HeredocSpec]:
    try:
        words = process_word_with_matches(args, {}, "\\", raw_quotes=True, raw_escapes=True).words
    except WordError:
        return []
    specs = []
    for word in words:
        spec = parse_heredoc_word(word)
        if spec is not None:
            specs.append(spec)
    return specs
