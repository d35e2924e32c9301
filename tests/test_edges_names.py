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


# The name-length rule the project follows (shared reference note: domain + path <= 255) is the one of
# distribution/reference before v0.6.0: reference.go@8507c7fcf0da Parse checks len(matches[1]) >
# NameTotalLengthMax = 255, where matches[1] is the whole normalised name "domain/path".
# (v0.6.0, commit aaca75ef76fc, counts the path alone.)
def test_name_length_limit_is_255_characters_of_domain_slash_path():
    host = "registry.example.com"  # 20 characters, plus the "/"
    at_limit = parse_reference(f"{host}/{'a' * 234}:v1")
    assert len(at_limit.context) == 255 and at_limit.tag == "v1"
    with pytest.raises(ReferenceError_, match="longer than 255 characters"):
        parse_reference(f"{host}/{'a' * 235}:v1")
    # the Hub's implied "docker.io/library/" counts too: 18 + 237 = 255
    assert len(parse_reference("a" * 237).context) == 255
    with pytest.raises(ReferenceError_, match="longer than 255 characters"):
        parse_reference("a" * 238)


def test_empty_reference_error_is_exact():
    with pytest.raises(ReferenceError_, match=r"^invalid reference: empty$"):
        parse_reference("   ")


# Grammar (distribution/reference reference.go@0965666a6ade, package comment):
#   reference := name [ ":" tag ] [ "@" digest ]; neither name, tag nor digest may contain "@" or "/"
#   in the tag, so the digest is everything after the *first* "@", and a ":" followed later by a "/"
#   is no tag separator.
def test_everything_after_the_first_at_sign_is_the_digest():
    doubled = f"app@{DIGEST}@{DIGEST}"
    with pytest.raises(ReferenceError_, match=f"bad digest '{DIGEST}@{DIGEST}'"):
        parse_reference(doubled)


def test_a_colon_before_the_last_slash_is_not_a_tag_separator():
    with pytest.raises(ReferenceError_) as info:
        parse_reference("team/app:v1/extra")
    assert str(info.value) == (
        "invalid reference 'team/app:v1/extra': repository 'team/app:v1/extra' must be lowercase letters, "
        "digits and separators ('.', '_', '__', '-') between '/'-separated components"
    )


# distribution/reference's Parse hands the digest to go-digest's Parse, whose Validate
# (opencontainers/go-digest digest.go and algorithm.go@137fd2bb009d) accepts only an available
# algorithm (sha256, sha384, sha512: the hashes Docker links in) with exactly Size()*2 lowercase hex
# digits; any other algorithm is ErrDigestUnsupported, a wrong length ErrDigestInvalidLength.
@pytest.mark.parametrize("digest", ["sha384:" + "b" * 96, "sha512:" + "c" * 128])
def test_sha384_and_sha512_digests_are_accepted(digest):
    assert parse_reference(f"r.example/app@{digest}").digest == digest
    assert parse_reference("r.example/app").with_digest(digest).digest == digest


@pytest.mark.parametrize(("digest", "reason"), [
    ("sha512:" + "a" * 64, "a sha512 digest has 128 lowercase hex digits"),
    ("sha384:" + "a" * 64, "a sha384 digest has 96 lowercase hex digits"),
    ("sha512:" + "A" * 128, "a sha512 digest has 128 lowercase hex digits"),
    ("SHA256:" + "a" * 64, "unsupported digest algorithm 'SHA256'"),
    ("md5:" + "a" * 32, "unsupported digest algorithm 'md5'")])  # fmt: skip
def test_digests_go_digest_refuses_are_refused(digest, reason):
    with pytest.raises(ReferenceError_) as info:
        parse_reference(f"r.example/app@{digest}")
    assert str(info.value) == f"invalid reference 'r.example/app@{digest}': {reason}"
    with pytest.raises(ReferenceError_) as info:
        parse_reference("r.example/app").with_digest(digest)
    assert str(info.value) == f"invalid digest '{digest}': {reason}"
