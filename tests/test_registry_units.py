"""Unit rules without a registry: manifest checks, the verifying reader, property tests for
references and challenges."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pybuildless.errors import DigestMismatchError, ImageFormatError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Digest
from pybuildless.registry.challenge import parse_challenges
from pybuildless.registry.client import check_manifest
from pybuildless.name import parse_reference
from pybuildless.registry.verify import VerifyingReader

MANIFEST = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {}, "layers": []}


def raw(doc) -> bytes:
    return json.dumps(doc).encode()


def test_manifest_media_type_rules():
    assert check_manifest(raw(MANIFEST), mt.OCI_MANIFEST, "m") == mt.OCI_MANIFEST
    # no mediaType in the document: the Content-Type decides; none at all: the shape decides
    no_type = {k: v for k, v in MANIFEST.items() if k != "mediaType"}
    assert check_manifest(raw(no_type), mt.DOCKER_MANIFEST, "m") == mt.DOCKER_MANIFEST
    assert check_manifest(raw({"schemaVersion": 2, "manifests": []}), "application/json", "m") == mt.OCI_INDEX
    with pytest.raises(ImageFormatError, match="differs from mediaType"):  # CVE-2021-41190
        check_manifest(raw(MANIFEST), mt.OCI_INDEX, "m")
    with pytest.raises(ImageFormatError, match="both an index and a manifest"):
        check_manifest(raw({**MANIFEST, "manifests": []}), mt.OCI_MANIFEST, "m")
    with pytest.raises(ImageFormatError, match="schema 1"):
        check_manifest(raw({"schemaVersion": 1, "name": "x"}), "application/json", "m")
    with pytest.raises(ImageFormatError, match="not valid JSON"):
        check_manifest(b"{", mt.OCI_MANIFEST, "m")
    with pytest.raises(ImageFormatError, match="unsupported manifest media type"):
        check_manifest(raw({**MANIFEST, "mediaType": "application/vnd.example+json"}), "", "m")


def reader(data: bytes, claimed: bytes | None = None, size: int | None = None) -> VerifyingReader:
    digest = Digest.of_bytes(claimed if claimed is not None else data)
    return VerifyingReader(io.BytesIO(data), digest, len(data) if size is None else size, what="blob x")


def test_verifying_reader_accepts_exact_content_in_small_reads():
    data = bytes(range(256)) * 100
    r = reader(data)
    got = b"".join(iter(lambda: r.read(1000), b""))
    assert got == data
    r.close()


@pytest.mark.parametrize("data,claimed,size,message", [
    (b"hello", b"hellO", None, "does not match"),
    (b"hello world", b"hello", 5, "more than the expected 5 bytes"),
    (b"hell", b"hello", 5, "got 4 bytes, expected 5"),
])
def test_verifying_reader_rejects(data, claimed, size, message):
    with pytest.raises(DigestMismatchError, match=message):
        r = reader(data, claimed, size)
        r.read()


def test_closing_early_still_verifies_the_rest():
    r = reader(b"x" * 10_000, b"y" * 10_000)
    r.read(10)
    with pytest.raises(DigestMismatchError):
        r.close()  # drains the remaining bytes, then checks
    clean = reader(b"x" * 10_000)
    clean.read(10)
    clean.close()  # fine: drained and matched
    abandoned = reader(b"x" * 10_000, b"y" * 10_000)
    abandoned.read(10)
    abandoned.abandon()  # no verification when the caller already failed


_component = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
_host = st.one_of(st.just(""), st.from_regex(r"[a-z]{1,8}\.[a-z]{2,5}(:[1-9][0-9]{1,4})?", fullmatch=True),
                  st.just("localhost:5000"))
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(host=_host, path=st.lists(_component, min_size=1, max_size=3), tag=st.one_of(st.none(), _tag),
       digest=st.one_of(st.none(), st.from_regex(r"[a-f0-9]{64}", fullmatch=True)))
def test_reference_renderings_parse_back_to_the_same_reference(host, path, tag, digest):
    assume(host or "." not in path[0])  # a first component with a dot is a registry host (Docker's rule)
    text = (host + "/" if host else "") + "/".join(path)
    if tag:
        text += ":" + tag
    if digest:
        text += "@sha256:" + digest
    ref = parse_reference(text)
    assert parse_reference(ref.name) == ref
    assert parse_reference(f"{ref.context}@{ref.digest}" if ref.digest else f"{ref.context}:{ref.tag}").identifier \
        == ref.identifier
    assert ref.repository.endswith("/".join(path))


_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


@settings(max_examples=100, deadline=None)
@given(realm=_value, service=_value, scope=_value)
def test_quoted_challenge_values_survive_escaping(realm, service, scope):
    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    header = f"Bearer realm={quote(realm)}, service={quote(service)},scope={quote(scope)}"
    [c] = parse_challenges(header)
    assert (c.realm, c.service, c.get("scope")) == (realm, service, scope)
