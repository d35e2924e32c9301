"""WWW-Authenticate parsing, scope helpers, URL redaction and option mapping."""

from __future__ import annotations

import pytest

from pybuildless.registry.challenge import merge_scopes, parse_challenges, pick_challenge, split_scope
from pybuildless.registry.options import RegistryOptions, parse_host_value_pairs
from pybuildless.name import parse_reference
from pybuildless.registry.responses import redact_url, retry_after_seconds, with_query
from pybuildless.errors import UsageError


def test_docker_hub_style_bearer_challenge():
    [c] = parse_challenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.docker.io/token"
    assert c.service == "registry.docker.io"
    assert c.scopes == ("repository:samalba/my-app:pull,push",)


def test_bare_values_escapes_spaces_and_case():
    [c] = parse_challenges('BEARER Realm = "a\\"b" , service=reg.example, scope="a:b:pull c:d:push", error=insufficient_scope')
    assert c.scheme == "bearer"
    assert c.realm == 'a"b'
    assert c.service == "reg.example"
    assert c.scopes == ("a:b:pull", "c:d:push")
    assert c.error == "insufficient_scope"


def test_several_challenges_in_one_header_and_several_headers():
    challenges = parse_challenges(['Negotiate, Basic realm="r1"', 'Bearer realm="r2"'])
    assert [c.scheme for c in challenges] == ["negotiate", "basic", "bearer"]
    assert pick_challenge(challenges).realm == "r1"
    with_token68 = parse_challenges('Negotiate YWJj==, Bearer realm=x')
    assert [c.scheme for c in with_token68] == ["negotiate", "bearer"]
    assert with_token68[1].realm == "x"
    assert pick_challenge(parse_challenges("Negotiate")) is None


def test_scope_actions_split_on_the_last_colon():
    assert split_scope("repository:host:5000/ns/repo:pull,push") == ("repository", "host:5000/ns/repo", ("pull", "push"))
    assert split_scope("registry:catalog:*") == ("registry", "catalog", ("*",))


def test_new_scopes_come_first_without_duplicates():
    assert merge_scopes(["repository:a:push"], ["repository:b:pull", "repository:a:push"]) == (
        "repository:a:push",
        "repository:b:pull",
    )


def test_redacted_urls_keep_only_harmless_query_values():
    url = "https://user:pw@reg.example/v2/x/blobs/uploads/abc?_state=SECRETSTATE&digest=sha256:1&X-Amz-Signature=zz"
    out = redact_url(url)
    assert "SECRETSTATE" not in out and "pw" not in out and "zz" not in out
    assert "digest=sha256:1" in out and out.startswith("https://reg.example/v2/x/blobs/uploads/abc?")


def test_digest_is_merged_into_an_opaque_location():
    loc = "http://h/v2/r/blobs/uploads/u?_state=abc%3D&x=1"
    merged = with_query(loc, digest="sha256:00")
    assert merged.startswith("http://h/v2/r/blobs/uploads/u?")
    assert "_state=abc%3D" in merged and "x=1" in merged and "digest=sha256%3A00" in merged


def test_retry_after_seconds_and_http_date():
    class R:
        def __init__(self, v):
            self.headers = {"Retry-After": v} if v is not None else {}

    assert retry_after_seconds(R("2")) == 2.0
    assert retry_after_seconds(R("100000")) == 60.0  # capped
    assert retry_after_seconds(R("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # in the past
    assert retry_after_seconds(R(None)) is None
    assert retry_after_seconds(R("soon")) is None


def test_tls_and_http_choice_per_host():
    opts = RegistryOptions(
        insecure_registries=("reg.local:5000",),
        skip_tls_verify_registries=("self.signed",),
        certificates=(("corp.example", "/etc/ca.pem"),),
    )
    assert opts.plain_http("reg.local:5000") and not opts.plain_http("other.example")
    assert opts.verify_tls("self.signed") is False
    assert opts.verify_tls("corp.example") == "/etc/ca.pem"
    assert opts.verify_tls("other.example") is True
    assert RegistryOptions(skip_tls_verify_pull=True).verify_tls("x", pull=True) is False
    assert RegistryOptions(skip_tls_verify_pull=True).verify_tls("x", pull=False) is True


def test_mirrors_and_registry_map():
    opts = RegistryOptions(
        registry_mirrors=("mirror.example",),
        registry_map=(("index.docker.io", "harbor.example/proxy"), ("gcr.io", "gcr-mirror.example")),
    )
    hub = [r.name for r in opts.mirrors_for(parse_reference("busybox:1"))]
    assert hub == ["mirror.example/library/busybox:1", "harbor.example/proxy/library/busybox:1"]
    gcr = [r.name for r in opts.mirrors_for(parse_reference("gcr.io/p/app:2"))]
    assert gcr == ["gcr-mirror.example/p/app:2"]
    assert opts.mirrors_for(parse_reference("quay.io/x/y")) == []
    plain = RegistryOptions(registry_mirrors=("http://plain.example:5000",), registry_map=(("a", "https://tls.example"),))
    assert plain.plain_http("plain.example:5000") and not plain.plain_http("tls.example")
    assert [r.name for r in plain.mirrors_for(parse_reference("x"))] == ["plain.example:5000/library/x:latest"]


def test_host_value_flags():
    assert parse_host_value_pairs(["a=1;b=2", "c=3"], "--registry-map") == (("a", "1"), ("b", "2"), ("c", "3"))
    with pytest.raises(UsageError, match="--registry-certificate"):
        parse_host_value_pairs(["nohost"], "--registry-certificate")
