""".dockerignore patterns at their edges (found by mutation testing of dockerfile/dockerignore.py).

Oracle: moby/patternmatcher as vendored in moby@b985e231 (vendor/github.com/moby/patternmatcher/
patternmatcher.go: Pattern.compile and Pattern.match) and docker/cli's ignorefile.ReadAll rules:
- a pattern is cleaned with Go's filepath.Clean, one leading "/" dropped, "!" re-includes;
- "**" first in the pattern = suffix match, "**" last = prefix match, "*" and "?" never cross "/";
- regexp-special characters ``.+()|{}$`` are literal; ``\\x`` escapes x (and makes it a regexp);
- the last matching pattern decides, a pattern also matches a path through its parent directories.
"""

from __future__ import annotations

import pytest

from pybuildless.dockerfile.dockerignore import IgnoreFileError, PatternMatcher, read_ignore_patterns

CLEANED = [
    ("a/../b", "b"), ("../a", "../a"), ("../..", "../.."), ("a/b/../../..", ".."), ("a/..", "."),
    ("/../a", "a"), ("/", "/"), ("/a", "a"), ("./a/./b/", "a/b"), ("!abc", "!abc"), ("! def", "!def"),
    ("!/x/../y", "!y"), ("  spaced  ", "spaced"), ("  # not a comment", "# not a comment"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "pattern"), CLEANED)
def test_ignore_file_lines_are_cleaned_like_go(line, pattern):
    assert read_ignore_patterns(line + "\n") == [pattern]


# (pattern, path, excluded)
MATCHES = [
    # "**" first: a suffix match, with or without a following "/"
    ("**foo", "xfoo", True), ("**foo", "a/bfoo", True), ("**.txt", "deep/er/b.txt", True), ("**.txt", "b.txt", True),
    ("**/foo", "foo", True), ("**/foo", "a/b/foo", True), ("**/foo", "afoo", False), ("**", "any/thing", True),
    # "**" last: a prefix match of what precedes it
    ("docs/**", "docs/a/b", True), ("docs/**", "docsx", False),
    ("d?cs/**", "docs/a", True), ("d?cs/**", "dxcs", False),
    # "**" in the middle: any number of directories, including none
    ("a/**/z", "a/z", True), ("a/**/z", "a/b/c/z", True), ("a/**/z", "b/a/z", False),
    # "*" and "?" stay within one component
    ("a*", "abc", True), ("a*", "a/bc", True), ("*.go", "x/y.go", False), ("a?c", "abc", True), ("a?c", "a/c", False),
    ("?", "x", True), ("?", "xy", False),
    # regexp-special characters are literal, whether or not the pattern is a regexp
    ("a.b", "a.b", True), ("a.b", "axb", False), ("a.b*", "axb1", False), ("a.b*", "a.b1", True),
    ("f(1)+|{2}$", "f(1)+|{2}$", True), ("f(1)*", "f(1)x", True), ("f(1)*", "f1x", False),
    ("x-y*", "x-yz", True),
    # character classes
    ("[ab]c", "bc", True), ("[ab]c", "cc", False),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "path", "excluded"), MATCHES)
def test_pattern_semantics(pattern, path, excluded):
    assert PatternMatcher([pattern]).excludes(path) is excluded


def test_escaped_wildcard_matches_the_literal_character():
    assert PatternMatcher(["foo\\*bar"]).excludes("foo*bar")
    assert not PatternMatcher(["foo\\*bar"]).excludes("fooxbar")


@pytest.mark.parametrize(("pattern", "path", "excluded"), [
    ("[a-c]*", "b1", True), ("[a-c]*", "-1", False), ("[^a]*", "a1", False), ("[^a]*", "b1", True)])
def test_character_class_ranges_and_negation(pattern, path, excluded):
    assert PatternMatcher([pattern]).excludes(path) is excluded


def test_trailing_backslash_is_a_bad_pattern():
    """patternmatcher.New checks each pattern with filepath.Match, which rejects a trailing ``\\``."""
    with pytest.raises(IgnoreFileError, match=r"\.dockerignore: syntax error in pattern 'tail\\\\'"):
        PatternMatcher(["tail\\"])


def test_last_matching_pattern_decides_and_parents_match():
    m = PatternMatcher(["build", "!build/keep", "*.log", "!important.log"])
    assert m.excludes("build/out/x") and not m.excludes("build/keep") and not m.excludes("build/keep/inner")
    assert m.excludes("debug.log") and not m.excludes("important.log")


# "**" in the middle or after a literal becomes "(.*/)?" and eats no following character: "a**b" is the
# regexp ^a(.*/)?b$ (patternmatcher.go compile, moby/patternmatcher@5a6d8429a19b), so it matches "ab"
# and "a<dirs>/b" but not "axb".
@pytest.mark.parametrize(("path", "excluded"), [("ab", True), ("ax/b", True), ("a/x/b", True), ("axb", False)])
def test_double_star_inside_a_name_needs_a_slash_before_what_follows(path, excluded):
    assert PatternMatcher(["a**b"]).excludes(path) is excluded


# Go's regexp "." does not match a newline (regexp/syntax: flag s, "let . match \n", is off by
# default), while a "**"-last pattern after a literal is a plain prefix test (prefixMatch) that does:
# a file name with a newline falls outside a "**" that stands for directories, inside a "docs/**".
@pytest.mark.parametrize(("pattern", "path", "excluded"), [
    ("docs/**", "docs/a\nb", True), ("**/*.log", "a\nb/c.log", False), ("x/**/*.log", "x/a\nb/c.log", False),
    ("x/**/*.log", "x/ab/c.log", True), ("d?/**", "dx/a\nb", False), ("d?/**", "dx/ab", True),
    ("*.log", "a\nb.log", True), ("a?b", "a\nb", True)])  # fmt: skip
def test_newline_in_a_name_follows_go_regexp_dot(pattern, path, excluded):
    assert PatternMatcher([pattern]).excludes(path) is excluded
