"""Word processing against BuildKit's vector tables and lex_test cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuildless.dockerfile.lex import (
    WordError,
    expand_heredoc_body,
    process_word,
    process_word_with_matches,
    process_words,
)

DATA = Path(__file__).parent / "data" / "dockerfile"
ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases():
    for number, line in enumerate((DATA / "envVarTest").read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        platform, source, expected = (part.strip() for part in line.split("|"))
        if platform in ("A", "U"):
            yield pytest.param(source, expected, id=f"line{number}")


@pytest.mark.parametrize(("source", "expected"), list(_env_var_cases()))
def test_env_var_vectors(source, expected):
    if expected == "error":
        with pytest.raises(WordError):
            process_word(source, ENV)
    else:
        assert process_word(source, ENV) == expected


def _words_cases():
    env: dict[str, str] = {}
    cases = []
    for number, line in enumerate((DATA / "wordsTest").read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            key, _, value = line[3:].lstrip(" ").partition("=")
            env[key] = value
            continue
        source, expected = line.split("|")
        cases.append(pytest.param(source.strip(), expected.lstrip(" ").split(","), dict(env), id=f"line{number}"))
    return cases


@pytest.mark.parametrize(("source", "expected", "env"), _words_cases())
def test_words_vectors(source, expected, env):
    try:
        result = process_words(source, env)
    except WordError:
        result = ["error"]
    assert result == expected


MATCH_CASES = [
    ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx  ccc"),
    ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx bbb ccc"),
    ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa bbb "),
    ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa  "),
    ("${BAR?bbb}", {"BAR": ""}, ""),
    ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
    ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
    ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy."),
    ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
    ("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"}, "/foo.*/*.txt - /foo..*.txt"),
    ("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"}, "/tmp/bar.txt - /bar.txt"),
    ("${FOO/$N/$R} - ${FOO//$N/$R}", {"FOO": "/a/foo/b/c.txt", "N": "/?/", "R": "/"}, "/foo/b/c.txt - /foo/c.txt"),
    ("${FOO/$N/$R}", {"FOO": "http://google.de", "N": "http://", "R": "https://"}, "https://google.de"),
    ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy"),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO///}", {}, ""),
    ("something-${V}.${OS}-${ARCH}${VAR:+-${VAR}}.tar.gz", {"V": "v1", "OS": "linux", "ARCH": "arm", "VAR": "v7"},
     "something-v1.linux-arm-v7.tar.gz"),
]  # fmt: skip


@pytest.mark.parametrize(("word", "env", "expected"), MATCH_CASES)
def test_process_with_matches(word, env, expected):
    assert process_word(word, env) == expected


@pytest.mark.parametrize("word", ["${BAZ?ccc}", "${BAR:?bbb}", "${BAZ:?}", "${FOO=aaa}", "${FOO=}", "${FOO//ww}",
                                  "${FOO//}", "${FOO#\\x}"])  # fmt: skip
def test_process_errors(word):
    with pytest.raises(WordError):
        process_word(word, {"FOO": "xxx", "BAR": ""})


def test_mandatory_message_includes_expanded_text():
    with pytest.raises(WordError, match="message herex"):
        process_word("${VAR:?message here$ARG}", {"VAR": "", "ARG": "x"})
    assert process_word("${VAR?message here$ARG}", {"VAR": "", "ARG": "x"}) == ""


def test_matched_and_unmatched_names():
    result = process_word_with_matches("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "x", "BAR": ""})
    assert result.matched == {"FOO", "BAR"}
    assert result.unmatched == {"BAZ"}


def test_backtick_escape_directive():
    assert process_word(r"c:\path\x", {}, "`") == r"c:\path\x"
    assert process_word("a`$B", {"B": "1"}, "`") == "a$B"
    assert process_word(r"a\$B", {"B": "1"}, "`") == "a\\1"


def test_heredoc_body_keeps_quotes_and_expands():
    body = "name=$N\n'$N' \"$N\" \\$N\n"
    assert expand_heredoc_body(body, {"N": "v"}) == "name=v\n'v' \"v\" $N\n"


def test_unset_differs_from_empty():
    assert process_word("${X-unset}", {}) == "unset"
    assert process_word("${X-unset}", {"X": ""}) == ""


# Written from the Dockerfile reference ("Environment replacement") and the POSIX
# parameter-expansion rules BuildKit follows; the expected values are stated here.
REFERENCE_ENV = {"v": "hello", "empty": "", "path": "/usr/local/bin/tool.tar.gz"}
REFERENCE_CASES = [
    ("${v:-w}", "hello"),
    ("${unset:-w}", "w"),
    ("${empty:-w}", "w"),          # ':' treats empty as unset
    ("${empty-w}", ""),            # without ':' only unset takes the default
    ("${unset-w}", "w"),
    ("${v:+w}", "w"),
    ("${empty:+w}", ""),
    ("${empty+w}", "w"),           # set (though empty): the alternative
    ("${unset+w}", ""),
    ("${empty?boom}", ""),         # '?' without ':' only fails when unset
    ("${path#*/}", "usr/local/bin/tool.tar.gz"),   # shortest prefix
    ("${path##*/}", "tool.tar.gz"),                 # longest prefix
    ("${path%.*}", "/usr/local/bin/tool.tar"),      # shortest suffix
    ("${path%%.*}", "/usr/local/bin/tool"),         # longest suffix
    ("${path/o/0}", "/usr/l0cal/bin/tool.tar.gz"),  # first match
    ("${path//o/0}", "/usr/l0cal/bin/t00l.tar.gz"),  # every match
    ("'$v'", "$v"),                # single quotes: no expansion
    ('"$v"', "hello"),
    ("\\$v", "$v"),                # escaped dollar
    ("${v}world", "helloworld"),
    ("a${unset}b", "ab"),
    ("${unset:-$v}", "hello"),     # the word is expanded too
    ("${unset:-${v}x}", "hellox"),
]


@pytest.mark.parametrize(("word", "expected"), REFERENCE_CASES, ids=[w for w, _ in REFERENCE_CASES])
def test_reference_expansion_rules(word, expected):
    assert process_word(word, REFERENCE_ENV) == expected


@pytest.mark.parametrize("word", ["${unset:?boom}", "${empty:?boom}", "${unset?boom}"])
def test_reference_mandatory_forms_fail(word):
    with pytest.raises(WordError, match="boom"):
        process_word(word, REFERENCE_ENV)
