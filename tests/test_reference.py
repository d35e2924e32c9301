"""Reference parsing and normalisation, against distribution/reference's rules."""

from __future__ import annotations

import pytest

from pybuildless.errors import ReferenceError_
from pybuildless.name import parse_reference, parse_repository

SHA = "sha256:" + "0123456789abcdef" * 4

VALID = [
    # input, registry, repository, tag, digest, name
    ("busybox", "docker.io", "library/busybox", "latest", None, "docker.io/library/busybox:latest"),
    ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None, "docker.io/library/ubuntu:22.04"),
    ("docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", None, "docker.io/library/ubuntu:latest"),
    ("docker.io/foo/bar", "docker.io", "foo/bar", "latest", None, "docker.io/foo/bar:latest"),
    ("index.docker.io/foo/bar:1", "docker.io", "foo/bar", "1", None, "docker.io/foo/bar:1"),
    ("registry-1.docker.io/library/x", "docker.io", "library/x", "latest", None, "docker.io/library/x:latest"),
    ("foo/bar", "docker.io", "foo/bar", "latest", None, "docker.io/foo/bar:latest"),
    ("localhost/foo", "localhost", "foo", "latest", None, "localhost/foo:latest"),
    ("localhost:5000/foo", "localhost:5000", "foo", "latest", None, "localhost:5000/foo:latest"),
    # "foo:5000" is a Hub image with tag 5000: the tag follows the last ':' after the last '/'
    ("foo:5000", "docker.io", "library/foo", "5000", None, "docker.io/library/foo:5000"),
    ("127.0.0.1:5000/a/b/c:v1.2_x-y", "127.0.0.1:5000", "a/b/c", "v1.2_x-y", None,
     "127.0.0.1:5000/a/b/c:v1.2_x-y"),
    ("ghcr.io/o/r@" + SHA, "ghcr.io", "o/r", None, SHA, "ghcr.io/o/r@" + SHA),
    ("ghcr.io/o/r:t@" + SHA, "ghcr.io", "o/r", "t", SHA, "ghcr.io/o/r:t@" + SHA),
    ("[::1]:5000/x", "[::1]:5000", "x", "latest", None, "[::1]:5000/x:latest"),
    ("Example.COM/x", "example.com", "x", "latest", None, "example.com/x:latest"),
    ("a.b/c__d/e--f.g", "a.b", "c__d/e--f.g", "latest", None, "a.b/c__d/e--f.g:latest"),
    # an uppercase first component is a registry host (splitDockerDomain), lowercased
    ("UPPER/case", "upper", "case", "latest", None, "upper/case:latest"),
]


@pytest.mark.parametrize("text,registry,repository,tag,digest,name", VALID)
def test_valid_references(text, registry, repository, tag, digest, name):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ref.name == name
    assert str(ref) == text  # the original rendering is kept
    assert ref.context == f"{registry}/{repository}"
    assert ref.identifier == (digest or tag)


INVALID = [
    ("", "empty"),
    ("Upper", "lowercase"),
    ("localhost/Upper:v1", "lowercase"),
    ("foo/Bar", "lowercase"),
    ("foo:bad tag", "bad tag"),
    ("foo:-dash", "bad tag"),
    ("foo@sha256:abc", "bad digest"),
    ("foo@sha256:" + "A" * 64, "64 lowercase hex"),
    ("foo//bar", "repository"),
    ("foo/bar_", "repository"),
    ("-foo/bar", "repository"),
    (":tag", "missing repository"),
    ("0123456789abcdef" * 4, "image ID"),
    ("registry.example.com/" + "a" * 250, "255"),
    ("foo:" + "t" * 129, "bad tag"),
    ("exa_mple.com:5000/x", "registry host"),
]


@pytest.mark.parametrize("text,reason", INVALID)
def test_invalid_references_say_why(text, reason):
    with pytest.raises(ReferenceError_) as info:
        parse_reference(text)
    assert reason in str(info.value)


def test_hub_api_host_and_scopes():
    ref = parse_reference("busybox")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.scope("pull") == "repository:library/busybox:pull"
    local = parse_reference("localhost:5000/ns/app:1")
    assert local.api_host == "localhost:5000"
    assert local.scope("push,pull") == "repository:ns/app:push,pull"


def test_digest_wins_over_tag_as_identifier_and_equality_ignores_original():
    a = parse_reference("docker.io/library/busybox:latest")
    b = parse_reference("busybox")
    assert a == b and str(a) != str(b)
    d = b.with_digest(SHA)
    assert d.identifier == SHA and d.is_digest and d.tag == "latest"
    assert str(d) == f"docker.io/library/busybox:latest@{SHA}"


def test_without_default_tag_and_repository_only():
    assert parse_reference("foo", default_tag=False).tag is None
    assert parse_repository("localhost:5000/cache").context == "localhost:5000/cache"
    with pytest.raises(ReferenceError_, match="no tag"):
        parse_repository("localhost:5000/cache:v1")


def test_with_tag_validates():
    ref = parse_reference("x/y")
    assert ref.with_tag("v2").name == "docker.io/x/y:v2"
    with pytest.raises(ReferenceError_):
        ref.with_tag("bad tag")
