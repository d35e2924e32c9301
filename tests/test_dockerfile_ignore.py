"""Go filepath.Match, moby patternmatcher (.dockerignore), context walking and COPY globs."""

from __future__ import annotations

import pytest

from pybuildless.dockerfile.dockerignore import (
    IgnoreFileError,
    PatternMatcher,
    load_dockerignore,
    read_ignore_patterns,
    walk_context,
)
from pybuildless.dockerfile.pathmatch import BadPattern, glob_paths, has_wildcards, match

# (pattern, name, matches) - the semantics of Go's filepath.Match (its match_test table style).
GO_MATCH = [
    ("abc", "abc", True), ("*", "abc", True), ("*c", "abc", True), ("a*", "a", True), ("a*", "abc", True),
    ("a*", "ab/c", False), ("a*/b", "abc/b", True), ("a*/b", "a/c/b", False), ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False), ("ab[c]", "abc", True), ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False), ("ab[^c]", "abc", False), ("ab[^b-d]", "abc", False), ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True), ("a\\*b", "ab", False), ("a?b", "a☺b", True), ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False), ("[a-ζ]*", "α", True), ("*[a-ζ]", "A", False), ("a?b", "a/b", False),
    ("a*b", "a/b", False), ("[\\]a]", "]", True), ("[\\-]", "-", True), ("[x\\-]", "z", False),
    ("*x", "xxx", True), ("*", ".hidden", True), ("arr[[]0].txt", "arr[0].txt", True),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "name", "expected"), GO_MATCH)
def test_go_filepath_match(pattern, name, expected):
    assert match(pattern, name) is expected


@pytest.mark.parametrize("pattern", ["[", "[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "[a-b-c]", "\\", "a\\"])
def test_go_bad_patterns(pattern):
    with pytest.raises(BadPattern):
        match(pattern, "x")


def test_has_wildcards():
    assert has_wildcards("a/*.txt") and has_wildcards("x?") and has_wildcards("[ab]")
    assert not has_wildcards("plain/file") and not has_wildcards("a\\*b")


def test_read_ignore_patterns_rules():
    text = "\ufeff# comment\n  # not a comment\n\n /abs/path/ \n!  keep \ndir/../other\n./x\n**/*.md\n"
    assert read_ignore_patterns(text) == ["# not a comment", "abs/path", "!keep", "other", "x", "**/*.md"]


# (patterns, path, excluded) - cases in the spirit of moby/patternmatcher tests.
IGNORE_CASES = [
    (["*.md"], "README.md", True), (["*.md"], "docs/a.md", False), (["**/*.md"], "docs/a/b.md", True),
    (["**/*.md"], "top.md", True), (["*/temp*"], "a/temporary", True), (["*/temp*"], "a/b/temp", False),
    (["node_modules"], "node_modules/a/b.js", True), (["foo/**"], "foo/x/y", True), (["foo/**"], "foo", False),
    (["**/foo"], "foo", True), (["**/foo"], "a/b/foo", True), (["**/foo"], "a/xfoo", False),
    (["**"], "anything/at/all", True), (["dir/**/x"], "dir/x", True), (["dir/**/x"], "dir/a/b/x", True),
    (["a.b"], "axb", False), (["(x)"], "(x)", True), (["[ab]c"], "bc", True), (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),
    (["*.md", "!README*.md", "README-secret.md"], "README-x.md", False),
    (["*.md", "README-secret.md", "!README*.md"], "README-secret.md", False),
    (["*", "!target/app.jar"], "target/app.jar", False), (["*", "!target/app.jar"], "target/lib.jar", True),
    (["docs", "!docs/keep"], "docs/keep/file", False), ([".git"], ".git/HEAD", True),
    (["."], "anything", False),
    # An escape makes the pattern a regexp (patternmatcher.go compile, every version; Docker
    # 20.10's pkg/fileutils compiled every pattern to one), so "\\*" is a literal "*".
    (["a\\*b"], "a*b", True), (["a\\*b"], "a\\*b", False), (["a\\*b*"], "a*bc", True),
]  # fmt: skip


@pytest.mark.parametrize(("patterns", "path", "excluded"), IGNORE_CASES)
def test_pattern_matcher(patterns, path, excluded):
    assert PatternMatcher(patterns).excludes(path) is excluded


def test_illegal_patterns():
    with pytest.raises(IgnoreFileError, match='illegal exclusion pattern: "!"'):
        PatternMatcher(read_ignore_patterns("!\n"))
    with pytest.raises(IgnoreFileError, match="syntax error in pattern"):
        PatternMatcher(["[abc"])


def test_can_skip_dir():
    m = PatternMatcher(["*", "!src/*/keep.txt", "build"])
    assert not m.can_skip_dir("src")  # an exception could re-include inside
    assert m.can_skip_dir("docs")
    # Docker 20.10's walk (fsutil walker.go@0834f99b7b85) enters an excluded directory only for
    # a "!" pattern whose text starts with the directory's path: "**/important.log" does not.
    assert PatternMatcher(["logs", "!**/important.log"]).can_skip_dir("logs")
    assert not PatternMatcher(["logs", "!logs/important.log"]).can_skip_dir("logs")
    assert not PatternMatcher(["*.tmp"]).can_skip_dir("src")  # not excluded at all


@pytest.fixture
def context(tmp_path):
    for rel in ["Dockerfile", "app/main.py", "app/.env", "target/app.jar", "target/lib.jar",
                "node_modules/x/index.js", "docs/a.md", "README.md", "build.Dockerfile"]:  # fmt: skip
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return tmp_path


def test_dockerfile_specific_ignore_overrides_context_ignore(context):
    (context / ".dockerignore").write_text("*.md\n")
    (context / "build.Dockerfile.dockerignore").write_text("app\n")
    specific = load_dockerignore(str(context), str(context / "build.Dockerfile"))
    assert specific.excludes("app/main.py") and not specific.excludes("README.md")
    default = load_dockerignore(str(context), str(context / "Dockerfile"))
    assert default.excludes("README.md") and not default.excludes("app/main.py")
    assert not load_dockerignore(str(context / "app"), None).patterns


def test_walk_context_prunes_and_reincludes(context):
    matcher = PatternMatcher(["node_modules", "target", "!target/app.jar", "**/.env", "*.md"])
    walked = list(walk_context(str(context), matcher))
    assert walked == ["Dockerfile", "app", "app/main.py", "build.Dockerfile", "docs", "docs/a.md",
                      "target", "target/app.jar"]  # fmt: skip


def test_glob_paths_for_copy_sources(context):
    assert glob_paths(str(context), "app/*") == ["app/.env", "app/main.py"]  # * matches dotfiles
    assert glob_paths(str(context), "/../*/*.jar") == ["target/app.jar", "target/lib.jar"]
    assert glob_paths(str(context), "nothing*") == []
    assert glob_paths(str(context), "[a-d]*") == ["app", "build.Dockerfile", "docs"]
