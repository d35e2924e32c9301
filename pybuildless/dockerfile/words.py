"""What word processing produces: its error, its result, and the accumulator that splits words.

Split from ``lex`` (the grammar) so each stays small; ``lex`` re-exports ``WordError`` and
``WordResult``, which is where callers import them from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pybuildless.errors import DockerfileError, PybuildlessError


class WordError(DockerfileError):
    """A word could not be processed (bad substitution, unterminated quote, ``${v?msg}``)."""

    def __init__(self, message: str) -> None:
        # No location yet: the lexer only sees one word.
        PybuildlessError.__init__(self, message)
        self.path = None
        self.line = None
        self.bare_message = message

    def located(self, path: str, line: int | None) -> DockerfileError:
        return DockerfileError(self.bare_message, path=path, line=line)


@dataclass(frozen=True)
class WordResult:
    """The outcome of processing one word."""

    value: str
    words: tuple[str, ...]
    matched: frozenset[str]
    unmatched: frozenset[str]


@dataclass
class WordAccumulator:
    """Accumulates whitespace-separated words; quoted/escaped text never splits."""

    word: str = ""
    words: list[str] = field(default_factory=list)
    in_word: bool = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def finish(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words
