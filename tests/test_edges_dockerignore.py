""".dockerignore patterns at their edges (found by mutation testing of dockerfile/dockerignore.py).

Oracle: moby/patternmatcher as vendored in moby@b985e231 (vendor/github.com/moby/patternmatcher/
patternmatcher.go: Pattern.compile and Pattern.match) and docker/cli's ignorefile.ReadAll rules:
- a pattern is cleaned with Go's filepath.Clean, one leading "/" dropped, "!" re-includes;
- "**" first in the pattern = suffix match, "**" last = prefix match, "*" and "?" never cross "/";
- regexp-special characters ``.+()|{}$`` are literal; ``\\x`` escapes x (and makes it a regexp);
- the last matching pattern decides, a pattern also matches a path through its parent directories.
"""

from __future__ import annotations

import os

import pytest

from pybuildless.dockerfile.dockerignore import (
    IgnoreFileError,
    PatternMatcher,
    load_dockerignore,
    read_ignore_patterns,
    walk_context,
)

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


def test_blank_patterns_are_skipped_not_the_end():
    """patternmatcher.New skips a pattern that is empty after TrimSpace and goes on with the next."""
    m = PatternMatcher(["", "   ", "a", "!b"])
    assert [p.text for p in m.patterns] == ["a", "b"] and m.excludes("a")
    # Exclusions(): whether any pattern is a "!" pattern
    assert m.has_exclusions is True and PatternMatcher(["a"]).has_exclusions is False


def test_a_literal_x_is_no_wildcard():
    """Only ``* ? [ ] \\`` change a pattern's kind (patternmatcher.go compile): "**X" stays a suffix
    match and "X/**" a prefix match (which, unlike a regexp ".", crosses a newline)."""
    assert PatternMatcher(["**X"]).excludes("aX") and PatternMatcher(["**X"]).excludes("a/bX")
    assert PatternMatcher(["X/**"]).excludes("X/a\nb")


def test_a_reversed_class_range_is_a_syntax_error_naming_the_pattern():
    """filepath.Match accepts "[z-a]" (it never compares the bounds), but Go's regexp compiler
    rejects it: the pattern cannot be used (filepath.ErrBadPattern, "syntax error in pattern")."""
    with pytest.raises(IgnoreFileError, match=r"^\.dockerignore: syntax error in pattern '\[z-a\]': "):
        PatternMatcher(["[z-a]"])


@pytest.mark.parametrize(("patterns", "path", "excluded"), [
    (["a"], "/a", True), (["a"], "//a/b", True), (["Xa"], "Xa", True), (["Xa"], "/Xa", True), (["a"], "Xa", False),
    # the parent of "dir/x y" is "dir": the name's space splits nothing
    (["dir/x"], "dir/x y", False), (["dir/x"], "dir/x/y z", True)])  # fmt: skip
def test_paths_are_taken_relative_to_the_context_root(patterns, path, excluded):
    assert PatternMatcher(patterns).excludes(path) is excluded


# Docker 20.10's context walk (tonistiigi/fsutil walker.go@0834f99b7b85, Walk): the root itself is
# never matched; an excluded directory is skipped unless a "!" pattern's text + "/" starts with the
# directory's path + "/"; whatever lies below a skipped directory is never seen, even where a later
# "!" pattern would re-include it.
@pytest.mark.parametrize(("patterns", "path", "is_dir", "sent"), [
    (["*", "!keep"], ".", True, True), (["*", "!keep"], "/", True, True), (["."], "a/b", False, True),
    (["docs", "!**/keep.md"], "docs/keep.md", False, False), (["a/b", "!**/keep.md"], "a/b/keep.md", False, False),
    (["a/b", "!**/keep.md"], "a/keep.md", False, True), (["a/b", "!**/keep.md"], "a/c/d/keep.md", False, True),
    (["a/b/c", "!**/keep.md"], "a/b/c/d/keep.md", False, False),
    (["!docs", "docs"], "docs", True, True), (["!docs", "docs"], "docs/a", False, False),
    (["docs", "!docs/keep.md"], "/docs", True, True), (["docs", "!docs/keep.md"], "/docs/keep.md", False, True),
    (["Xdocs"], "Xdocs/a", False, False), (["Xdocs"], "/Xdocs", True, False)])  # fmt: skip
def test_membership_in_the_context_follows_the_walk(patterns, path, is_dir, sent):
    assert PatternMatcher(patterns).in_context(path, is_dir) is sent


def _context(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "real").mkdir(parents=True)
    (ctx / "real" / "f").write_text("f")
    (ctx / "link").symlink_to("real")
    return ctx


def test_the_walk_does_not_follow_a_symlink_to_a_directory(tmp_path):
    """The context is walked with lstat (fsutil's filepath.Walk): a symlink is sent as itself."""
    ctx = _context(tmp_path)
    assert list(walk_context(str(ctx), PatternMatcher())) == ["link", "real", "real/f"]
    # an excluded symlink is not a directory the walk could enter for a "!" pattern below it
    assert list(walk_context(str(ctx), PatternMatcher(["link", "real", "!link/f", "!real/f"]))) == ["real", "real/f"]


def test_a_dockerfile_on_stdin_has_no_ignore_file_of_its_own(tmp_path, monkeypatch):
    """With the Dockerfile read from stdin ("-") only <context>/.dockerignore counts, never a file
    "-.dockerignore" in the current directory."""
    ctx = _context(tmp_path)
    (ctx / ".dockerignore").write_text("real\n")
    (tmp_path / "-.dockerignore").write_text("link\n")
    monkeypatch.chdir(tmp_path)
    m = load_dockerignore(str(ctx), "-")
    assert m.excludes("real/f") and not m.excludes("link")


def test_an_unreadable_ignore_file_is_an_error_naming_it(tmp_path):
    ctx = _context(tmp_path)
    (ctx / ".dockerignore").mkdir()
    with pytest.raises(IgnoreFileError, match=rf"^{ctx}/\.dockerignore: cannot read: Is a directory$"):
        load_dockerignore(str(ctx), None)


def test_a_bad_pattern_error_names_the_ignore_file_in_use(tmp_path):
    ctx = _context(tmp_path)
    dockerfile = tmp_path / "app.Dockerfile"
    (tmp_path / "app.Dockerfile.dockerignore").write_text("ok\n[z-a]\n")
    with pytest.raises(IgnoreFileError, match=rf"^{dockerfile}\.dockerignore: syntax error in pattern '\[z-a\]'"):
        load_dockerignore(str(ctx), str(dockerfile))


def test_ignore_file_bytes_that_are_not_utf8_match_the_same_bytes_in_names(tmp_path):
    """Go strings are bytes: a pattern with byte 0xE9 (Latin-1 "é") excludes the file whose name has
    that byte, and other bytes are left alone."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in (b"caf\xe9.txt", b"caf\xc3\xa9.txt", b"cafe.txt"):
        (ctx / os.fsdecode(name)).write_bytes(b"x")
    (ctx / ".dockerignore").write_bytes(b"caf\xe9.txt\n")
    walked = [os.fsencode(p) for p in walk_context(str(ctx), load_dockerignore(str(ctx), None))]
    assert sorted(walked) == [b".dockerignore", b"cafe.txt", b"caf\xc3\xa9.txt"]


# ignorefile.ReadAll (moby/patternmatcher ignorefile/ignorefile.go@5a6d8429a19b) reads lines with bufio.Scanner
# (ScanLines): a line ends at "\n" only, and one "\r"
# before it (or at the end of the file) is dropped; any other control character is part of the line.
@pytest.mark.parametrize(("text", "patterns"), [
    ("a\r\nb\r\n", ["a", "b"]), ("a\r\nb\r", ["a", "b"]), ("a\rb\n", ["a\rb"]), ("a\rb\rc", ["a\rb\rc"]),
    ("x\x0cy\n", ["x\x0cy"]), ("x\x1dy\n", ["x\x1dy"]), ("p\u2028q\n", ["p\u2028q"]), ("#c\rd\ne", ["e"]),
    # a "\r" that starts a line stays: the line is no comment, and TrimSpace removes the "\r" afterwards
    ("\r#x\n", ["#x"])])  # fmt: skip
def test_ignore_file_lines_end_at_newline_only(text, patterns):
    assert read_ignore_patterns(text) == patterns
