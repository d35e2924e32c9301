"""Word processing for builder-expanded Dockerfile words (BuildKit's ``shell/lex.go`` rules).

Public API::

    process_word(word, env, escape="\\\\") -> str
    process_words(word, env, escape="\\\\") -> list[str]
    process_word_with_matches(word, env, ...) -> WordResult   # value, words, matched, unmatched

``env`` is any ``Mapping[str, str]``: an absent key is *unset*, a key mapped to ``""`` is set
and empty (``${v-w}`` and ``${v:-w}`` differ on exactly that).

Rules implemented:
- ``$name`` / ``${name}``; names are letters, digits and ``_``; ``$1``... and the special
  parameters ``$@ $* $# $? $- $$ $! $0`` are looked up like names (normally unset, so empty);
  a ``$`` before any other character is literal.
- ``${v:-w} ${v-w} ${v:+w} ${v+w} ${v:?m} ${v?m}``, ``${v#p} ${v##p} ${v%p} ${v%%p}``
  (shell globs ``*`` ``?`` and ``\\`` escapes, no bracket classes), ``${v/p/r} ${v//p/r}``.
  ``w`` may itself contain expansions and quotes, nested to any depth.
- Single quotes: everything literal. Double quotes: ``$`` expands, only ``\\"`` ``\\$`` and
  ``\\\\`` are escapes. Unquoted: ``\\x`` is ``x``; a trailing escape is dropped.
- Words split on whitespace *after* expansion, except text from quotes or escapes.

Errors are ``WordError`` (a ``DockerfileError`` without location); callers that know the
file and line re-raise with them via ``WordError.located``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pybuildless.dockerfile.words import WordAccumulator, WordError, WordResult

_SPECIAL_PARAMS = frozenset("@*#?-$!0")


class _Lexer:
    """One pass over one word. Options mirror BuildKit's Lex fields."""

    def __init__(
        self,
        text: str,
        env: Mapping[str, str],
        escape: str,
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset: bool = False,
    ) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset = skip_unset
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    # -- scanner helpers -------------------------------------------------------------
    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        if self.pos >= len(self.text):
            return ""
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False

    # -- grammar -----------------------------------------------------------------------
    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved_raw = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._process_stop_on(stop)
        finally:
            self.raw_escapes = saved_raw

    def _process_stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = WordAccumulator()
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.finish()
            if ch == "$":
                value = self.process_dollar()
                result.append(value)
                words.add_string(value)
            elif ch in "'\"" and not self.skip_process_quotes:
                value = self.process_single_quote() if ch == "'" else self.process_double_quote()
                result.append(value)
                words.add_raw_string(value)
            else:
                ch = self.next()
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = self.next()
                    if not ch:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise WordError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.finish()

    def process_single_quote(self) -> str:
        out = []
        quote = self.next()
        if self.raw_quotes:
            out.append(quote)
        while True:
            ch = self.next()
            if not ch:
                raise WordError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def process_double_quote(self) -> str:
        out = []
        quote = self.next()
        if self.raw_quotes:
            out.append(quote)
        while True:
            ch = self.peek()
            if not ch:
                raise WordError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.process_dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if not following:
                    continue  # an escape at the very end is dropped
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def process_name(self) -> str:
        name = []
        while self.peek():
            ch = self.peek()
            if not name and ch.isdigit():
                while self.peek() and self.peek().isdigit():
                    name.append(self.next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalpha() or ch.isdigit() or ch == "_"):
                break
            name.append(self.next())
        return "".join(name)

    def process_dollar(self) -> str:
        self.next()  # the "$"
        if self.peek() != "{":
            name = self.process_name()
            if not name:
                return "$"
            value, found = self.lookup(name)
            if not found and self.skip_unset:
                return "$" + name
            return value
        self.next()  # the "{"
        first = self.peek()
        if not first:
            raise WordError("syntax error: missing '}'")
        if first in "{}:":
            raise WordError("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        modifier = ch
        if ch == "}":
            value, found = self.lookup(name)
            if not found and self.skip_unset:
                return "${%s}" % name
            return value
        if ch == "/":
            return self._replace(name)
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            modifier += ch
        elif ch not in "+-?#%":
            raise WordError(f"unsupported modifier ({modifier}) in substitution")
        raw = ch in "#%"
        try:
            word, _ = self.process_stop_on("}", raw)
        except WordError:
            if not self.peek():
                raise WordError("syntax error: missing '}'") from None
            raise
        value, found = self.lookup(name)
        if self.skip_unset and not found:
            return "${%s%s%s}" % (name, modifier, word)
        empty_counts_as_unset = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if empty_counts_as_unset else value
        if ch == "+":
            return "" if empty_counts_as_unset else word
        if ch == "?":
            if not found:
                raise WordError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise WordError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in "#%" and not null_is_unset:
            greedy = word.startswith(ch)
            if greedy:
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise WordError(f"unsupported modifier ({modifier}) in substitution")

    def _replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.process_stop_on("/", True)
        except WordError:
            if not self.peek():
                raise WordError("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement, _ = self.process_stop_on("}", True)
        except WordError:
            if not self.peek():
                raise WordError("syntax error: missing '}'") from None
            raise
        value, found = self.lookup(name)
        if self.skip_unset and not found:
            return "${%s/%s/%s}" % (name, pattern, replacement)
        regex = _shell_pattern_regex(pattern, greedy=True, anchored=False)
        if replace_all:
            # A function replacement keeps the text literal (no group references).
            return regex.sub(lambda _m: replacement, value)
        m = regex.search(value)
        if m is None:
            return value
        return value[: m.start()] + replacement + value[m.end() :]


def _shell_pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """Translate a ``${v#pattern}`` shell pattern (``*``, ``?``, ``\\`` escapes) to a regex."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
        elif tok == "?":
            out.append(".")
        elif tok == "\\":
            # at the end, BuildKit reads scanner.EOF and prints it with %c: U+FFFD
            following = pattern[i] if i < len(pattern) else "\ufffd"
            if following in ("}", "/"):
                continue  # the escape only protected the ${} delimiter
            if following not in ("*", "?", "\\"):
                raise WordError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{following}'")
            out.append("\\" + following)
            i += 1
        else:
            out.append(re.escape(tok))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _shell_pattern_regex(pattern, greedy=greedy, anchored=True).search(value)
    return value[m.end() :] if m else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each ``\\x`` escape pair in order."""
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            tokens.append(pattern[i : i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # Regexes find leftmost matches, so search the reversed value with the reversed pattern.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def process_word_with_matches(
    word: str,
    env: Mapping[str, str],
    escape: str = "\\",
    *,
    raw_quotes: bool = False,
    raw_escapes: bool = False,
    skip_process_quotes: bool = False,
    skip_unset: bool = False,
) -> WordResult:
    """Process ``word``; also report which variable names were found and which were not."""
    lexer = _Lexer(
        word,
        env,
        escape,
        raw_quotes=raw_quotes,
        raw_escapes=raw_escapes,
        skip_process_quotes=skip_process_quotes,
        skip_unset=skip_unset,
    )
    try:
        value, words = lexer.process_stop_on("", raw_escapes)
    except WordError as exc:
        raise WordError(f"failed to process {word!r}: {exc.bare_message}") from None
    return WordResult(value, tuple(words), frozenset(lexer.matched), frozenset(lexer.unmatched))


def process_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Expand variables and remove quotes/escapes; the result is one string."""
    return process_word_with_matches(word, env, escape).value


def process_words(word: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Like ``process_word`` but split into words after expansion (EXPOSE, heredoc detection)."""
    return list(process_word_with_matches(word, env, escape).words)


def expand_heredoc_body(body: str, env: Mapping[str, str]) -> str:
    """Expand a COPY/ADD heredoc body: variables and ``\\`` escapes, quotes kept as text."""
    return process_word_with_matches(body, env, "\\", skip_process_quotes=True).value
