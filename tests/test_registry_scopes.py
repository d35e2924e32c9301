"""Few token exchanges: scopes merged per repository, a token asked for a superset of the scopes
a request needs serves it, and the fallbacks for token servers that refuse several scopes in one
request or grant only the first (distribution docs/content/spec/auth/token.md at
01b4555d59222ec9698cb1173b980cbbb1fb5289, "Requesting a Token"; the first-scope quirk as
go-containerregistry's pkg/v1/remote/transport/bearer.go describes it)."""

from __future__ import annotations

import pytest

from pybuildless.errors import AuthError
from pybuildless.name import parse_reference
from pybuildless.registry.challenge import covers, union_scopes
from pybuildless.registry.credentials import Credential, StaticKeychain
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.remote import fetch_image, push_image
from pybuildless.registry.transport import Transport


def test_union_merges_the_actions_of_one_repository_and_keeps_the_needed_first():
    assert union_scopes(["repository:b:pull"], ["repository:a:push,pull", "repository:b:push"]) == (
        "repository:b:pull,push", "repository:a:push,pull")
    assert union_scopes(["repository:host:5000/ns/r:pull"], []) == ("repository:host:5000/ns/r:pull",)
    assert union_scopes([], ["registry:catalog:*"]) == ("registry:catalog:*",)


@pytest.mark.parametrize("granted, needed, ok", [
    (["repository:a:push,pull", "repository:b:pull"], ["repository:a:pull"], True),
    (["repository:a:push,pull", "repository:b:pull"], ["repository:a:push,pull", "repository:b:pull"], True),
    (["repository:a:pull"], ["repository:a:push,pull"], False),
    (["repository:a:push,pull"], ["repository:b:pull"], False),
    (["repository:a:pull"], [], True),
])
def test_covers(granted, needed, ok):
    assert covers(granted, needed) is ok


def _options(server) -> RegistryOptions:
    cred = Credential(username=server.username, password=server.password)
    return RegistryOptions(keychain=StaticKeychain(((server.host, cred),)))


def _seed(server, busybox_image, *repos: str) -> None:
    source = fetch_image(busybox_image)
    push_image(source, [server.ref(f"{r}:1") for r in repos], options=_options(server))


def _head(t: Transport, repo: str, scopes: tuple[str, ...]) -> int:
    with t.request("HEAD", f"/v2/{repo}/manifests/1", scopes=scopes,
                   headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}) as resp:
        return resp.status_code


pytestmark = pytest.mark.slow


def test_one_token_serves_every_repository_asked_for_so_far(registry_factory, busybox_image):
    server = registry_factory("token")
    _seed(server, busybox_image, "scopes/a", "scopes/b")
    issuer = server.token_issuer
    t = Transport(server.host, _options(server))
    t.expect(["repository:scopes/dest:push,pull"])
    mark = len(issuer.requests)
    assert _head(t, "scopes/a", ("repository:scopes/a:pull",)) == 200
    assert _head(t, "scopes/a", ("repository:scopes/a:pull",)) == 200
    assert _head(t, "scopes/b", ("repository:scopes/b:pull",)) == 200
    assert _head(t, "scopes/a", ("repository:scopes/a:pull",)) == 200  # served by the second token
    assert [s for _, _, s, _ in issuer.requests[mark:]] == [
        ("repository:scopes/a:pull", "repository:scopes/dest:push,pull"),
        ("repository:scopes/b:pull", "repository:scopes/a:pull", "repository:scopes/dest:push,pull"),
    ]


def test_a_token_is_asked_for_the_most_recent_resources_only(registry_factory):
    from pybuildless.registry.tokens import MAX_SCOPES

    server = registry_factory("token")
    issuer = server.token_issuer
    t = Transport(server.host, _options(server))
    for n in range(MAX_SCOPES + 5):
        t.expect([f"repository:scopes/r{n}:pull"])
    mark = len(issuer.requests)
    with t.request("GET", "/v2/_catalog", scopes=("registry:catalog:*",)) as resp:
        assert resp.status_code == 200
    (asked,) = [s for _, _, s, _ in issuer.requests[mark:]]
    assert len(asked) == MAX_SCOPES and asked[0] == "registry:catalog:*"
    assert asked[1] == f"repository:scopes/r{MAX_SCOPES + 4}:pull"  # the latest announced first


def test_a_token_server_refusing_several_scopes_gets_one_at_a_time(registry_factory, busybox_image):
    server = registry_factory("token")
    _seed(server, busybox_image, "scopes/a", "scopes/b", "scopes/c")
    issuer = server.token_issuer
    issuer.max_scopes = 1
    t = Transport(server.host, _options(server))
    mark = len(issuer.requests)
    for repo in ("a", "b", "c"):
        assert _head(t, f"scopes/{repo}", (f"repository:scopes/{repo}:pull",)) == 200
    assert [s for _, _, s, _ in issuer.requests[mark:]] == [
        ("repository:scopes/a:pull",),
        ("repository:scopes/b:pull", "repository:scopes/a:pull"),  # refused (400)...
        ("repository:scopes/b:pull",),  # ...then the needed scope alone, from then on
        ("repository:scopes/c:pull",),
    ]


def test_a_token_server_granting_only_the_first_scope(registry_factory, busybox_image):
    """The wider token lacks what it was asked for: the registry's 401 gets a token for the
    needed scope alone, and later tokens are asked for one scope set at a time."""
    server = registry_factory("token")
    _seed(server, busybox_image, "scopes/a", "scopes/b", "scopes/c")
    issuer = server.token_issuer
    issuer.first_scope_only = True
    t = Transport(server.host, _options(server))
    t.expect(["repository:scopes/a:pull"])
    mark = len(issuer.requests)
    assert _head(t, "scopes/b", ("repository:scopes/b:pull",)) == 200
    assert _head(t, "scopes/a", ("repository:scopes/a:pull",)) == 200  # 401 with the wide token, then 200
    assert _head(t, "scopes/c", ("repository:scopes/c:pull",)) == 200
    assert [s for _, _, s, _ in issuer.requests[mark:]] == [
        ("repository:scopes/b:pull", "repository:scopes/a:pull"),
        ("repository:scopes/a:pull",),
        ("repository:scopes/c:pull",),
    ]


def test_a_build_push_through_a_first_scope_only_token_server(registry_factory, busybox_image):
    """The whole pull-then-push sequence still ends in a complete image (at the cost of the
    extra exchanges above), read back by digest."""
    server = registry_factory("token")
    _seed(server, busybox_image, "scopes/base")
    server.token_issuer.first_scope_only = True
    options = _options(server)
    base = fetch_image(server.ref("scopes/base:1"), options=options)
    dest = parse_reference(server.ref("scopes/out:1"))
    assert push_image(base, [dest], options=options) == base.digest
    assert fetch_image(server.ref(f"scopes/out@{base.digest}"), options=options).digest == base.digest


def test_wrong_credentials_still_fail_with_one_clear_error(registry_factory):
    server = registry_factory("token")
    t = Transport(server.host, RegistryOptions(keychain=StaticKeychain(
        ((server.host, Credential(username=server.username, password="wrong")),))))
    t.expect(["repository:scopes/dest:push,pull"])
    with pytest.raises(AuthError, match="token server refused user"):
        _head(t, "scopes/a", ("repository:scopes/a:pull",))


def test_pulling_and_pushing_transports_keep_their_own_tokens(registry_factory, busybox_image):
    """``--insecure-pull`` parts the host's pulling transport (plain HTTP) from its pushing one;
    the pull's token is asked for the base alone, never with push on the announced destination
    (a push token is not to travel in plain HTTP: tests/test_registry_review.py); the push's
    one token covers the mount (reads the base) and the upload (writes the destination)."""
    from pybuildless.registry import ahead
    from pybuildless.registry.sharing import shared_transport

    server = registry_factory("token")
    _seed(server, busybox_image, "scopes/base")
    issuer = server.token_issuer
    cred = Credential(username=server.username, password=server.password)
    options = RegistryOptions(insecure_pull=True, keychain=StaticKeychain(((server.host, cred),)))
    assert shared_transport(server.host, options, pull=True) is not shared_transport(server.host, options)
    dest = parse_reference(server.ref("scopes/shared:1"))
    mark = len(issuer.requests)
    ahead.begin(options, [dest])
    try:
        base = fetch_image(server.ref("scopes/base:1"), options=options)
        assert push_image(base, [dest], options=options) == base.digest
    finally:
        ahead.end(options)
    assert [s for _, _, s, _ in issuer.requests[mark:]] == [
        ("repository:scopes/base:pull",), ("repository:scopes/shared:push,pull", "repository:scopes/base:pull")]
