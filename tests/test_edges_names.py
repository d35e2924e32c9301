"""Reference derivation and the context walk's membership test at their edges (found by mutation
testing of name/reference.py and dockerfile/dockerignore.py)."""

from __future__ import annotations

import pytest

from pybuildless.dockerfile.dockerignore import PatternMatcher
from pybuildless.errors import ReferenceError_
from pybuildless.name.reference import parse_reference

DIGEST = "sha256:" + "a" * 64


def test_derived_references_drop_the_original_text():
    ref = parse_reference("localhost:5000/app@" + DIGEST)
    tagged = ref.with_tag("v2")
    assert (tagged.tag, tagged.digest, str(tagged)) == ("v2", None, "localhost:5000/app:v2")
    pinned = parse_reference("localhost:5000/app:v1").with_digest(DIGEST)
    assert str(pinned) == f"localhost:5000/app:v1@{DIGEST}"
    moved = parse_reference("localhost:5000/app:v1").with_registry("mirror.example:5001")
    assert (moved.registry, moved.repository, str(moved)) == ("mirror.example:5001", "app", "mirror.example:5001/app:v1")
    renamed = parse_reference("localhost:5000/app:v1").with_registry("mirror.example", "team/app")
    assert str(renamed) == "mirror.example/team/app:v1"


@pytest.mark.parametrize(("method", "value", "message"), [
    ("with_tag", "bad tag", "invalid tag 'bad tag'"), ("with_digest", "sha256:xyz", "invalid digest 'sha256:xyz'")])
def test_bad_tag_or_digest_is_named(method, value, message):
    with pytest.raises(ReferenceError_, match=f"^{message}$"):
        getattr(parse_reference("r.example/app:1"), method)(value)


def test_context_membership_follows_the_walk():
    """An excluded directory is sent only when a ``!`` pattern starts with its path (then the
    walk enters it); anything below a directory it does not enter is out."""
    m = PatternMatcher(["docs", "!docs/keep.md", "build"])
    assert m.in_context(".", True) and m.in_context("/src/a.py", False) and m.in_context("src", True)
    assert m.in_context("docs", True) and m.in_context("docs/keep.md", False)
    assert not m.in_context("docs/other.md", False) and not m.in_context("docs", False)
    assert not m.in_context("build", True) and not m.in_context("build/x/y", False)
    assert not m.in_context("docs/sub/keep.md", False)
