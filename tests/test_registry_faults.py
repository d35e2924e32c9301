"""Pulls and pushes through a fault-injecting proxy in front of the real registry.

They either complete or fail with a clear error; a failed push never leaves a
manifest that references a missing blob; corrupted content is always caught.
"""

from __future__ import annotations

import json
import time

import pytest

from pybuildless.errors import AuthError, DigestMismatchError, NotFoundError, RegistryError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Digest
from pybuildless.registry.client import RegistryClient
from pybuildless.registry.options import RegistryOptions
from pybuildless.name import parse_reference
from pybuildless.registry.remote import fetch_image, image_exists, pull_image, push_image
from tests.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.slow

BLOB_GET = r"/v2/.+/blobs/sha256:"
UPLOAD = r"/v2/.+/blobs/uploads/"
MANIFEST = r"/v2/.+/manifests/"


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry.url) as p:
        yield p


@pytest.fixture
def source(busybox_image):
    return fetch_image(busybox_image)


def via(proxy: FaultProxy, busybox_image: str) -> str:
    """The busybox reference, but through the proxy."""
    return busybox_image.replace(busybox_image.split("/")[0], proxy.host, 1)


def manifest_blobs_present(registry, ref_text: str) -> bool:
    """Ask the registry directly: does every blob the manifest names exist?"""
    ref = parse_reference(ref_text)
    client = RegistryClient.for_reference(ref)
    fetched = client.get_manifest(ref)
    manifest = json.loads(fetched.raw)
    scopes = (ref.scope("pull"),)
    for d in [manifest["config"], *manifest["layers"]]:
        if not client.blob_exists(ref.repository, Digest.parse(d["digest"]), scopes=scopes):
            return False
    return True


def test_bursts_of_503_during_push_are_retried(proxy, registry, source):
    proxy.add(
        Fault("status", UPLOAD, method="POST", count=2, status=503),
        Fault("status", UPLOAD, method="PUT", count=1, status=502),
        Fault("status", MANIFEST, method="PUT", count=2, status=500),
    )
    dest = f"{proxy.host}/faults/burst:v1"
    digest = push_image(source, [dest])
    assert digest == source.digest
    assert proxy.count("POST", UPLOAD, "fault 503") == 2
    assert proxy.count("PUT", MANIFEST, "fault 500") == 2
    assert proxy.count("PUT", MANIFEST, "201") == 1
    assert manifest_blobs_present(registry, registry.ref("faults/burst:v1"))
    # bodies go out with Content-Length, never chunked (registries and presigned storage reject it)
    uploads = [h for m, p, h in proxy.headers if m == "PUT" and "/blobs/uploads/" in p]
    assert uploads and all("content-length" in h and "transfer-encoding" not in h for h in uploads)
    # the manifest goes out with its own media type as Content-Type
    [manifest_put] = [h for m, p, h in proxy.headers if m == "PUT" and "/manifests/" in p][-1:]
    assert manifest_put["content-type"] == source.media_type
    assert all(h.get("accept-encoding") == "identity" for _, p, h in proxy.headers if p != "/v2/")


def test_429_with_retry_after_is_honoured(proxy, busybox_image):
    proxy.add(Fault("status", MANIFEST, method="GET", count=1, status=429, retry_after="1"))
    start = time.monotonic()
    image = fetch_image(via(proxy, busybox_image))
    # the same Accept, with all four manifest types, on every manifest request, HEAD and GET
    assert image_exists(via(proxy, busybox_image)).digest == image.digest
    assert {m for m, p, h in proxy.headers if "/manifests/" in p} == {"GET", "HEAD"}
    [accept] = {h["accept"] for m, p, h in proxy.headers if "/manifests/" in p}
    assert all(t in accept for t in mt.MANIFEST_ACCEPT)
    assert time.monotonic() - start >= 0.95  # waited as told, not the 0.2 s default backoff
    assert image.layers()
    assert proxy.count("GET", MANIFEST, "fault 429") == 1


def test_connection_reset_mid_blob_on_pull_is_retried(proxy, busybox_image, tmp_path):
    proxy.add(Fault("reset_mid_body", BLOB_GET, method="GET", count=2))
    image = pull_image(via(proxy, busybox_image), tmp_path)
    [layer] = image.layers()
    data = layer.path.read_bytes()
    assert Digest.of_bytes(data) == layer.digest
    assert proxy.count("GET", BLOB_GET, "fault reset_mid_body") == 2
    assert [p.name for p in tmp_path.iterdir()] == [f"sha256-{layer.digest.hex}"]  # no temp files left


def test_streaming_layer_resumes_a_dropped_connection_and_reports_persistent_ones(proxy, busybox_image):
    image = fetch_image(via(proxy, busybox_image))
    [layer] = image.layers()
    layer_path = f"/blobs/{layer.digest}"
    proxy.add(Fault("truncate", layer_path, method="GET", count=1))
    with layer.open_compressed() as f:
        data = b"".join(iter(lambda: f.read(65536), b""))
    assert Digest.of_bytes(data) == layer.digest
    assert proxy.count("GET", layer_path, "206") == 1  # only the rest was asked for again

    proxy.add(Fault("truncate", layer_path, method="GET", count=-1))
    with pytest.raises(RegistryError) as info:
        with layer.open_compressed() as f:
            while f.read(65536):
                pass
    assert "body ended after" in str(info.value) or "connection lost" in str(info.value)
    assert info.value.temporary


def test_connection_reset_during_upload_is_retried(proxy, registry, source):
    proxy.add(Fault("reset", UPLOAD, method="PUT", count=1))
    dest = f"{proxy.host}/faults/reset-upload:v1"
    assert push_image(source, [dest]) == source.digest
    assert proxy.count("PUT", UPLOAD, "fault reset") == 1
    assert manifest_blobs_present(registry, registry.ref("faults/reset-upload:v1"))


def test_slow_response_beyond_the_read_timeout_is_retried(proxy, busybox_image, tmp_path):
    # generous margins: the machine may be busy, and only the first response is slow
    proxy.add(Fault("slow", BLOB_GET, method="GET", count=1, delay=3.0))
    options = RegistryOptions(timeout=(10.0, 1.0))
    image = pull_image(via(proxy, busybox_image), tmp_path, options=options)
    assert Digest.of_bytes(image.layers()[0].path.read_bytes()) == image.layers()[0].digest
    assert proxy.count("GET", BLOB_GET) >= 2


def test_corrupted_blob_is_detected_and_nothing_is_kept(proxy, busybox_image, tmp_path):
    proxy.add(Fault("corrupt", BLOB_GET, method="GET", count=-1))
    image_ref = via(proxy, busybox_image)
    # the config blob is corrupted first: fetch fails before any layer is touched
    with pytest.raises(DigestMismatchError) as info:
        pull_image(image_ref, tmp_path / "out")
    assert "does not match" in str(info.value) and "sha256:" in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_corrupted_layer_stream_is_detected(proxy, busybox_image, tmp_path):
    image = fetch_image(via(proxy, busybox_image))
    proxy.add(Fault("corrupt", BLOB_GET, method="GET", count=-1))
    [layer] = image.layers()
    with pytest.raises(DigestMismatchError, match=str(layer.digest)):
        with layer.open_compressed() as f:
            f.read(100)  # a partial read: close() drains and verifies the rest
    with pytest.raises(DigestMismatchError):
        image.client.download_blob(image.source.repository, layer.descriptor, tmp_path / "layer")
    assert not any(tmp_path.iterdir())  # neither the blob nor a temp file is left


def test_corrupted_manifest_by_digest_is_detected(proxy, busybox_image, source):
    by_digest = parse_reference(via(proxy, busybox_image)).with_digest(str(source.digest))
    proxy.add(Fault("corrupt", MANIFEST, method="GET", count=-1))
    with pytest.raises(DigestMismatchError, match="does not match the requested digest"):
        fetch_image(by_digest)


def test_persistent_upload_failure_never_pushes_the_manifest(proxy, registry, source):
    proxy.add(Fault("status", UPLOAD, method="PUT", count=-1, status=500))
    dest = f"{proxy.host}/faults/broken:v1"
    with pytest.raises(RegistryError) as info:
        push_image(source, [dest], options=RegistryOptions(retries=2))
    assert "HTTP 500" in str(info.value) and "/blobs/uploads/" in str(info.value)
    assert proxy.count("PUT", MANIFEST) == 0
    with pytest.raises(NotFoundError):
        fetch_image(registry.ref("faults/broken:v1"))


def test_client_errors_are_not_retried(proxy, busybox_image, source):
    missing = f"{proxy.host}/faults/never-pushed:v1"
    with pytest.raises(NotFoundError):
        fetch_image(missing)
    assert proxy.count("GET", r"/faults/never-pushed/manifests/") == 1
    proxy.add(Fault("status", MANIFEST, method="PUT", count=-1, status=403))
    with pytest.raises(AuthError):
        push_image(source, [f"{proxy.host}/faults/denied:v1"])
    assert proxy.count("PUT", MANIFEST, "fault 403") == 1


def test_persistent_5xx_gives_up_with_a_clear_temporary_error(proxy, busybox_image):
    proxy.add(Fault("status", MANIFEST, method="GET", count=-1, status=503))
    with pytest.raises(RegistryError) as info:
        fetch_image(via(proxy, busybox_image), options=RegistryOptions(retries=2))
    assert info.value.temporary and info.value.status == 503
    assert "UNAVAILABLE" in str(info.value)
    assert proxy.count("GET", MANIFEST, "fault 503") == 3


def test_content_encoding_label_on_blobs_is_not_decoded(proxy, busybox_image, tmp_path):
    """Registries behind httpd/nginx may label gzip layers Content-Encoding: gzip (moby#17595)."""
    proxy.add(Fault("header", BLOB_GET, method="GET", count=-1, headers=(("Content-Encoding", "gzip"),)))
    image = pull_image(via(proxy, busybox_image), tmp_path)
    assert Digest.of_bytes(image.layers()[0].path.read_bytes()) == image.layers()[0].digest
    assert proxy.count("GET", BLOB_GET, "fault header 200") >= 1


def test_registry_warnings_are_shown_once(proxy, busybox_image, caplog, monkeypatch):
    import logging

    caplog.set_level(logging.WARNING, logger="pybuildless")
    monkeypatch.setattr(logging.getLogger("pybuildless"), "propagate", True)
    proxy.add(Fault("header", MANIFEST, count=-1, headers=(("Warning", '299 - "this repository is deprecated"'),)))
    fetch_image(via(proxy, busybox_image))
    fetch_image(via(proxy, busybox_image))
    assert caplog.text.count("this repository is deprecated") == 1


def test_chunked_upload_when_monolithic_put_is_refused(proxy, registry, source):
    layer_hex = source.layers()[0].digest.hex  # the layer's PUT (the config goes up beside it)
    proxy.add(Fault("status", UPLOAD + f".*{layer_hex}", method="PUT", count=1, status=413))
    options = RegistryOptions(upload_chunk_size=300_000)
    dest = f"{proxy.host}/faults/chunked:v1"
    assert push_image(source, [dest], options=options) == source.digest
    layer_size = source.layers()[0].size
    assert proxy.count("PATCH", UPLOAD, "202") == -(-layer_size // 300_000)  # ceil: every chunk accepted
    assert manifest_blobs_present(registry, registry.ref("faults/chunked:v1"))


def test_credentials_are_not_sent_to_a_redirect_target(registry_basic, busybox_image, tmp_path):
    """Blob GETs redirected to another host (object storage) go there without Authorization."""
    from pybuildless.registry.credentials import Credential, StaticKeychain
    import base64

    creds = Credential(registry_basic.username, registry_basic.password)
    options = RegistryOptions(keychain=StaticKeychain(((registry_basic.host, creds),)))
    push_image(fetch_image(busybox_image), [registry_basic.ref("faults/redirected:v1")], options=options)
    basic = "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    with FaultProxy(registry_basic.url, upstream_authorization=basic) as storage, \
            FaultProxy(registry_basic.url) as front:
        front.add(Fault("redirect", BLOB_GET, method="GET", count=-1, location=f"http://localhost:{storage.port}"))
        options = RegistryOptions(keychain=StaticKeychain(((front.host, creds),)))
        image = pull_image(f"{front.host}/faults/redirected:v1", tmp_path, options=options)
        assert Digest.of_bytes(image.layers()[0].path.read_bytes()) == image.layers()[0].digest
        assert front.count("GET", BLOB_GET, "fault redirect") == 2  # config and layer
        assert storage.authorizations and all(auth is None for _, _, auth in storage.authorizations)
        assert any(auth == basic for m, p, auth in front.authorizations if "/manifests/" in p)


def test_open_v2_endpoint_with_protected_resources(registry_basic, busybox_image, tmp_path):
    """/v2/ answers 200 but resources challenge: the resource's challenge is adopted."""
    from pybuildless.registry.credentials import Credential, StaticKeychain

    creds = Credential(registry_basic.username, registry_basic.password)
    push_image(fetch_image(busybox_image), [registry_basic.ref("faults/open-ping:v1")],
               options=RegistryOptions(keychain=StaticKeychain(((registry_basic.host, creds),))))
    with FaultProxy(registry_basic.url) as front:
        front.add(Fault("status", r"^/v2/$", method="GET", count=-1, status=200))
        options = RegistryOptions(keychain=StaticKeychain(((front.host, creds),)))
        image = fetch_image(f"{front.host}/faults/open-ping:v1", options=options)
        assert image.layers()
        assert front.count("GET", r"^/v2/$", "fault 200") >= 1
        assert front.count("GET", MANIFEST, "401") == 1  # one challenge, then Basic on every request


def test_declined_and_failing_mounts_fall_back_to_uploads(proxy, registry, busybox_image, tmp_path):
    """A mount the registry declines (202: an upload session is open) or refuses (400) still
    ends with the blob uploaded (ggcr #1404)."""
    from dataclasses import dataclass
    from typing import Any

    from pybuildless.image.model import FileLayer, ManifestImage

    @dataclass(frozen=True)
    class SourcedLayer(FileLayer):
        source: Any = None

    pulled = pull_image(busybox_image, tmp_path / "blobs")
    [layer] = pulled.layers()
    # the claimed source repository does not have the blob: distribution answers 202
    nowhere = parse_reference(f"{proxy.host}/faults/empty-source:v1")
    sourced = SourcedLayer(layer.path, layer.digest, layer.diff_id, layer.size, layer.media_type, source=nowhere)
    image = ManifestImage(pulled.raw_manifest(), pulled.raw_config(), [sourced])
    assert push_image(image, [f"{proxy.host}/faults/mount-declined:v1"]) == pulled.digest
    assert proxy.count("POST", r"mount=", "202") == 1
    assert manifest_blobs_present(registry, registry.ref("faults/mount-declined:v1"))

    proxy.add(Fault("status", r"mount=", method="POST", count=-1, status=400))
    assert push_image(image, [f"{proxy.host}/faults/mount-refused:v1"]) == pulled.digest
    assert proxy.count("POST", r"mount=", "fault 400") == 1
    assert manifest_blobs_present(registry, registry.ref("faults/mount-refused:v1"))


def test_truncated_download_resumes_with_range(proxy, busybox_image, source, tmp_path):
    layer_digest = str(source.layers()[0].digest)
    proxy.add(Fault("truncate", f"/blobs/{layer_digest}", method="GET", count=1))
    image = pull_image(via(proxy, busybox_image), tmp_path)
    assert Digest.of_bytes(image.layers()[0].path.read_bytes()) == image.layers()[0].digest
    assert proxy.count("GET", f"/blobs/{layer_digest}", "fault truncate") == 1
    assert proxy.count("GET", f"/blobs/{layer_digest}", "206") == 1  # only the rest was fetched again


def test_truncated_manifest_is_fetched_again(proxy, busybox_image):
    proxy.add(Fault("truncate", MANIFEST, method="GET", count=1))
    image = fetch_image(via(proxy, busybox_image))
    assert image.layers() and proxy.count("GET", MANIFEST, "fault truncate") == 1


def test_registry_to_registry_copy_survives_a_source_fault_and_stops_on_corruption(
        proxy, registry, registry_factory, busybox_image, source):
    """Layers stream from one registry into another; a dropped source connection restarts the
    upload, corrupt source bytes abort the push before any manifest is written."""
    target = registry_factory()
    layer_path = f"/blobs/{source.layers()[0].digest}"
    remote = fetch_image(via(proxy, busybox_image))
    proxy.add(Fault("reset_mid_body", layer_path, method="GET", count=1))
    dest = target.ref("copied/ok:v1")
    assert push_image(remote, [dest]) == source.digest
    assert proxy.count("GET", layer_path) == 2
    assert manifest_blobs_present(target, dest)

    proxy.add(Fault("corrupt", layer_path, method="GET", count=-1))
    with pytest.raises(DigestMismatchError):
        push_image(remote, [target.ref("copied/bad:v1")])
    with pytest.raises(NotFoundError):
        fetch_image(target.ref("copied/bad:v1"))


def test_credentials_are_not_sent_to_an_upload_location_on_another_host(registry_basic, busybox_image):
    """Upload sessions may continue on another host (``Location`` is opaque): no credentials there."""
    import base64

    from pybuildless.registry.credentials import Credential, StaticKeychain

    creds = Credential(registry_basic.username, registry_basic.password)
    basic = "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    with FaultProxy(registry_basic.url, upstream_authorization=basic) as storage, \
            FaultProxy(registry_basic.url) as front:
        front.add(Fault("relocate", UPLOAD, method="POST", count=-1, location=f"http://localhost:{storage.port}"))
        options = RegistryOptions(keychain=StaticKeychain(((front.host, creds),)))
        dest = f"{front.host}/faults/relocated:v1"
        digest = push_image(fetch_image(busybox_image), [dest], options=options)
        assert digest == fetch_image(dest, options=options).digest
        puts = [auth for m, p, auth in storage.authorizations if m == "PUT"]
        assert len(puts) == 2 and all(auth is None for auth in puts)  # config and layer, no credentials
        assert all(auth == basic for m, p, auth in front.authorizations if p != "/v2/")


def test_wrong_docker_content_digest_on_manifest_push_is_caught(proxy, source):
    wrong = "sha256:" + "1" * 64
    proxy.add(Fault("header", MANIFEST, method="PUT", count=-1, headers=(("Docker-Content-Digest", wrong),)))
    with pytest.raises(DigestMismatchError, match=f"registry stored {wrong}"):
        push_image(source, [f"{proxy.host}/faults/wrong-digest:v1"])
