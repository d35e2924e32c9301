"""Edge rules of word expansion: error texts, modifiers, skip-unset, raw quotes, patterns.

Expected values follow BuildKit's frontend/dockerfile/shell/lex.go (moby/buildkit mirror HEAD):
its error texts (wrapped as ``failed to process <word>: <reason>``), the ``${name<mod>word}``
modifiers it accepts, SkipUnsetEnv keeping unknown references verbatim, and shell patterns
(``*`` greedy, ``\\`` escapes a pattern character).
"""

from __future__ import annotations

import pytest

from pybuildless.dockerfile.lex import WordError, process_word, process_word_with_matches, process_words
from pybuildless.errors import DockerfileError


def reason(word: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(WordError) as info:
        process_word(word, env or {})
    text = str(info.value)
    assert text.startswith("failed to process ")
    assert info.value.path is None and info.value.line is None
    return text.split(": ", 1)[1]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${", "syntax error: missing '}'"),
        ("${a", "syntax error: missing '}'"),
        ("${a:-x", "syntax error: missing '}'"),
        ("${a/x/y", "syntax error: missing '}'"),
        ("${a/x", "syntax error: missing '/' in ${}"),
        ("${}", "syntax error: bad substitution"),
        ("${a!}", "unsupported modifier (!) in substitution"),
        ("${a:=x}", "unsupported modifier (:=) in substitution"),
        ("${a:#x}", "unsupported modifier (:#) in substitution"),
        ("${a:?}", "a: is not allowed to be unset"),
        ("${a?}", "a: is not allowed to be unset"),
        ("${a?oops}", "a: oops"),
        ("'a", "unexpected end of statement while looking for matching single-quote"),
        ('"a', "unexpected end of statement while looking for matching double-quote"),
        ('"a\\', "unexpected end of statement while looking for matching double-quote"),
    ],
)
def test_word_errors_carry_buildkit_text(word, expected):
    assert reason(word) == expected


def test_required_variable_set_but_empty():
    """lex.go: ``${a:?}`` refuses an empty value, ``${a?}`` accepts it."""
    assert reason("${a:?}", {"a": ""}) == "a: is not allowed to be empty"
    assert reason("${a:?why}", {"a": ""}) == "a: why"
    assert process_word("${a?}", {"a": ""}) == ""


def test_word_error_located_names_file_and_line():
    located = WordError("bad thing").located("dir/Dockerfile", 7)
    assert isinstance(located, DockerfileError)
    assert str(located) == "dir/Dockerfile:7: bad thing"
    assert (located.path, located.line) == ("dir/Dockerfile", 7)


def test_skip_unset_keeps_unknown_references_verbatim():
    """lex.go SkipUnsetEnv: an unset variable stays as written, with its modifier."""
    word = "$a ${b} ${c:-x} ${d/x/y} ${e#p} ${f?m}"
    result = process_word_with_matches(word, {}, skip_unset=True)
    assert result.value == word
    known = process_word_with_matches("$a ${b} ${c:-x} ${d/x/y}", {"a": "1", "b": "2", "c": "3", "d": "xz"},
                                      skip_unset=True)  # fmt: skip
    assert known.value == "1 2 3 yz"


def test_replacement_pattern_is_greedy_and_takes_escapes():
    assert process_word("${a/b*c/X}", {"a": "abcabc"}) == "aX"
    assert process_word("${a//b/X}", {"a": "abcabc"}) == "aXcaXc"
    assert process_word("${a/\\//X}", {"a": "a/b"}) == "aXb"


def test_trim_patterns_with_escaped_star():
    assert process_word("${a%\\*b}", {"a": "a*b"}) == "a"
    assert process_word("${a%%\\**}", {"a": "a*b*c"}) == "a"
    assert process_word("${a#*\\*}", {"a": "a*b*c"}) == "b*c"
    assert process_word("${a%b\\*}", {"a": "xb*"}) == "x"


def test_double_quote_escapes_and_raw_quotes():
    """Inside double quotes only ``"``, ``$`` and the escape char are escapable."""
    assert process_word('"a\\"b\\$c\\x"', {}) == 'a"b$c\\x'
    assert process_word_with_matches('"a"', {}, raw_quotes=True).value == '"a"'
    assert process_word_with_matches("'a'", {}, raw_quotes=True).value == "'a'"
    assert process_word_with_matches("'a$b'x", {}, raw_quotes=True).value == "'a$b'x"


def test_variable_names_stop_at_non_name_characters():
    assert process_word("$a_b1-", {"a_b1": "X"}) == "X-"
    assert process_word("$ab.c", {"ab": "Y"}) == "Y.c"


def test_process_words_honours_the_escape_char():
    assert process_words("a` b $x", {"x": "1 2"}, "`") == ["a b", "1", "2"]
    assert process_words("a\\ b", {}, "`") == ["a\\", "b"]


@pytest.mark.parametrize("word", ["${a#\\a}", "${a%\\a}", "${a/\\a/x}"])
def test_pattern_with_an_invalid_escape_is_refused(word):
    """lex.go convertShellPatternToRegex: only ``\\*``, ``\\?`` and ``\\\\`` (and the ``}`` / ``/``
    delimiters) may be escaped in a pattern."""
    assert reason(word, {"a": "abc"}) == "invalid pattern (\\a) in substitution: invalid escape '\\a'"


def test_pattern_escapes_protect_the_delimiters():
    assert process_word("${a#a\\}}", {"a": "a}b"}) == "b"
    assert process_word("${a#x\\/}", {"a": "x/"}) == ""
    assert process_word("${a%\\}}", {"a": "ab}"}) == "ab"


def test_raw_escapes_keep_the_escape_inside_double_quotes():
    assert process_word_with_matches('"\\$a"', {"a": "1"}, raw_escapes=True).value == "\\$a"
    assert process_word_with_matches('"\\"x"', {}, raw_escapes=True).value == '\\"x'
    assert process_word('"\\$a"', {"a": "1"}) == "$a"


@pytest.mark.parametrize("word", ["${a:-${}}", "${a/${}/x}", "${a/x/${}}"])
def test_an_error_inside_a_modifier_word_is_reported_as_is(word):
    """lex.go: a nested error is returned unchanged; "missing '}'" only when the text ran out."""
    assert reason(word, {"a": "abc"}) == "syntax error: bad substitution"


def test_replacement_pattern_keeps_escapes_for_the_pattern():
    """An escaped ``*`` in ``${a/pattern/repl}`` is a literal star, not a wildcard."""
    assert process_word("${a/\\*/X}", {"a": "a*b"}) == "aXb"
    assert reason("${a:Xy}", {"a": "1"}) == "unsupported modifier (:X) in substitution"


def test_a_pattern_ending_in_a_lone_backslash_is_an_invalid_escape_of_eof():
    """With the backtick escape a pattern can end in ``\\``: convertShellPatternToRegex (lex.go,
    buildkit 73ed6825c4b7) then reads scanner.EOF (-1) as the escaped character and formats it with
    %c, which Go prints as U+FFFD."""
    with pytest.raises(WordError) as info:
        process_word_with_matches("${x%\\}", {"x": "ab"}, escape="`")
    assert str(info.value).split(": ", 1)[1] == "invalid pattern (\\) in substitution: invalid escape '\\\ufffd'"


def test_a_positional_name_is_all_its_digits():
    """processName (lex.go): a name that starts with a digit runs to the last digit: ``$12`` is "12"."""
    assert process_word("a$12b", {"12": "Z", "1": "one"}) == "aZb"
    assert process_word("a${12}b", {"12": "Z"}) == "aZb"
