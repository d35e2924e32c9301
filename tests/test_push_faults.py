"""Push work started ahead of the push (``registry.ahead``) and the short upload paths, under
faults injected by a proxy in front of the real registry: whatever fails or vanishes ahead is
done again by the push, an upload session is never left open, and a refused or failed
"Single POST" (distribution-spec end-4b) ends in a complete image all the same."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from pybuildless.name import parse_reference
from pybuildless.registry import ahead
from pybuildless.registry.client import RegistryClient
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.remote import fetch_image, push_image
from tests.buildkit import executor, write_context
from tests.faultproxy import Fault, FaultProxy
from tests.test_registry_faults import manifest_blobs_present, via

SESSION = r"/blobs/uploads/[0-9a-f-]{36}\?"


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry.url) as p:
        yield p


@pytest.fixture
def options():
    options = RegistryOptions()
    yield options
    ahead.end(options)  # nothing left registered for the next test


def _open_session(ref, options) -> str:
    return RegistryClient.for_reference(ref, options).start_upload(ref.repository, scopes=(ref.scope("push,pull"),))


def test_the_config_goes_into_the_parked_session(proxy, registry, busybox_image, options):
    source = fetch_image(via(proxy, busybox_image))
    ref = parse_reference(f"{proxy.host}/pushfaults/parked:1")
    started = ahead.begin(options, [ref])
    started.park(ref, _open_session(ref, options))
    mark = len(proxy.log)
    assert push_image(source, [ref], options=options) == source.digest
    assert fetch_image(registry.ref("pushfaults/parked:1")).digest == source.digest
    config_hex = json.loads(source.raw_manifest())["config"]["digest"].split(":")[1]
    config_requests = [(m, o) for m, p, o in proxy.log[mark:] if config_hex in p]
    assert config_requests == [("PUT", "201")]  # one PUT, into the session the check opened
    ahead.end(options)
    assert not [m for m, _, _ in proxy.log[mark:] if m == "DELETE"]  # it was used: nothing to cancel


def test_a_parked_session_that_is_gone_is_replaced(proxy, registry, busybox_image, options):
    source = fetch_image(via(proxy, busybox_image))
    ref = parse_reference(f"{proxy.host}/pushfaults/gone:1")
    location = _open_session(ref, options)
    RegistryClient.for_reference(ref, options)._cancel(location, (ref.scope("push,pull"),))  # purged meanwhile
    ahead.begin(options, [ref]).park(ref, location)
    mark = len(proxy.log)
    assert push_image(source, [ref], options=options) == source.digest
    puts = [o for m, p, o in proxy.log[mark:] if m == "PUT" and re.search(SESSION, p)]
    assert puts.count("404") == 1  # the dead session...
    assert manifest_blobs_present(registry, registry.ref("pushfaults/gone:1"))  # ...replaced by a new one


def test_a_session_nobody_used_is_cancelled_when_the_build_ends(proxy, options):
    ref = parse_reference(f"{proxy.host}/pushfaults/unused:1")
    ahead.begin(options, [ref]).park(ref, _open_session(ref, options))
    mark = len(proxy.log)
    ahead.end(options)
    assert [(m, o) for m, p, o in proxy.log[mark:]] == [("DELETE", "204")]
    assert ahead.current(options) is None


def test_a_failed_single_post_is_retried(proxy, registry, busybox_image, options):
    source = fetch_image(via(proxy, busybox_image))
    proxy.add(Fault("status", r"/blobs/uploads/\?digest=", method="POST", count=2, status=503))
    ref = parse_reference(f"{proxy.host}/pushfaults/single:1")
    assert push_image(source, [ref], options=options) == source.digest
    assert proxy.count("POST", r"/blobs/uploads/\?digest=", "fault 503") == 2
    assert manifest_blobs_present(registry, registry.ref("pushfaults/single:1"))


def test_a_mount_that_failed_ahead_is_done_by_the_push(proxy, registry, busybox_image, options):
    """The base layer's mount, started while the build ran, is refused once (403), and so is
    the upload tried instead: the push asks again itself instead of trusting the head start."""
    source = fetch_image(via(proxy, busybox_image))
    layer = source.layers()[0]
    ref = parse_reference(f"{proxy.host}/pushfaults/ahead:1")
    # refused, and so is the upload a refused mount falls back to
    proxy.add(Fault("status", r"\?mount=", method="POST", count=1, status=403),
              Fault("status", r"/pushfaults/ahead/blobs/uploads/$", method="POST", count=1, status=403))
    started = ahead.begin(options, [ref])
    started.start_layers(source.layers())
    assert started.blob_result(ref, layer.digest) is None  # failed ahead
    assert push_image(source, [ref], options=options) == source.digest
    mounts = [o for m, p, o in proxy.log if m == "POST" and "?mount=" in p and "pushfaults/ahead" in p]
    assert mounts == ["fault 403", "201"]
    assert manifest_blobs_present(registry, registry.ref("pushfaults/ahead:1"))


def test_a_mount_done_ahead_is_not_asked_again(proxy, registry, busybox_image, options):
    source = fetch_image(via(proxy, busybox_image))
    ref = parse_reference(f"{proxy.host}/pushfaults/once:1")
    started = ahead.begin(options, [ref])
    started.start_layers(source.layers())
    assert started.blob_result(ref, source.layers()[0].digest) == "mounted"
    mark = len(proxy.log)
    assert push_image(source, [ref], options=options) == source.digest
    assert not [p for m, p, _ in proxy.log[mark:] if "?mount=" in p]
    assert manifest_blobs_present(registry, registry.ref("pushfaults/once:1"))


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_a_failed_build_stops_its_base_layer_uploads_and_exits_at_once(tmp_path, registry_factory, busybox_image):
    """The base's layer goes up to a destination in another registry while the build runs; the
    build fails (a COPY of a missing file) while that upload's PUT hangs (the proxy holds it for
    60 s). The process ends within seconds with the build's own error and exit status (those
    of the same build with --no-push), no traceback, the permission check's upload session
    cancelled (distribution-spec "Cancel a blob upload") and no manifest pushed."""
    dest_registry = registry_factory()
    dockerfile = f"FROM {busybox_image}\nCOPY missing /missing\n"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    args = ("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"))
    alone = executor(*args, "--no-push", cwd=tmp_path, env=env, check=False)
    assert alone.returncode != 0
    with FaultProxy(dest_registry.url) as proxy:
        proxy.add(Fault("slow", r"/blobs/uploads/", method="PUT", count=-1, delay=60))
        started = time.monotonic()
        proc = executor(*args, "-d", f"{proxy.host}/pushfaults/failed:1", cwd=tmp_path, env=env, check=False)
        took = time.monotonic() - started
        log = list(proxy.log)
    stderr = proc.stderr.decode(errors="replace")
    assert took < 30, f"the failed build took {took:.1f}s to exit"
    assert proc.returncode == alone.returncode
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == \
        [line for line in alone.stderr.decode(errors="replace").splitlines() if line.startswith("error:")]
    # the sessions opened (the check's, the base layer's) are cancelled: each DELETE answered 204
    # (an upload stuck in its PUT when the build failed ends with the process instead)
    deletes = [o for m, _, o in log if m == "DELETE"]
    assert deletes and set(deletes) == {"204"}
    assert not [p for m, p, o in log if m == "PUT" and o.startswith("2")]  # nothing completed, no manifest


def test_a_refused_mount_becomes_an_upload(proxy, registry, busybox_image, options):
    """A 401/403 on a mount (no token both reading the source and writing the destination: a
    token server granting one scope per token, or no pull on the source) is not the end of
    the push: the blob is uploaded with the destination's own scope."""
    source = fetch_image(via(proxy, busybox_image))
    ref = parse_reference(f"{proxy.host}/pushfaults/refused:1")
    proxy.add(Fault("status", r"\?mount=", method="POST", count=1, status=403))
    mark = len(proxy.log)
    assert push_image(source, [ref], options=options) == source.digest
    layer_hex = source.layers()[0].digest.hex
    asked = [(m, o) for m, p, o in proxy.log[mark:] if "pushfaults/refused" in p and
             ("?mount=" in p or p.endswith("/blobs/uploads/") or layer_hex in p)]
    assert asked[:2] == [("POST", "fault 403"), ("POST", "202")] and ("PUT", "201") in asked
    assert manifest_blobs_present(registry, registry.ref("pushfaults/refused:1"))


def test_blob_work_ahead_runs_on_at_most_parallel_daemon_threads_and_close_stops_the_queue():
    """The work runs on ``parallel`` daemon threads (each keeps its connection from one blob
    to the next); closing with work left cancels what has not started and lets the running
    work see ``stopped``."""
    import threading

    from pybuildless.registry.ahead import PushAhead

    ahead_work = PushAhead(RegistryOptions(parallel=2), [])
    gate = threading.Event()
    seen: list[threading.Thread] = []

    def work() -> str:
        seen.append(threading.current_thread())
        gate.wait(10)
        return "stopped" if ahead_work.stopped.is_set() else "done"

    futures = [ahead_work._start(work) for _ in range(6)]
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:  # the first two have started
        time.sleep(0.01)
    threading.Timer(0.3, gate.set).start()
    ahead_work.close()  # while the first two run: the other four never start
    assert [f.cancelled() for f in futures] == [False, False, True, True, True, True]
    assert [f.result() for f in futures[:2]] == ["stopped", "stopped"]
    assert len({t.ident for t in seen}) == 2 and all(t.daemon for t in seen)

    ahead_work = PushAhead(RegistryOptions(parallel=2), [])
    seen.clear()
    gate.set()
    assert [ahead_work._start(work).result() for _ in range(3)] == ["done"] * 3


def test_a_reference_is_resolved_once_per_build_and_a_failure_is_not_kept():
    from pybuildless.registry.ahead import PushAhead

    build = PushAhead(RegistryOptions(), [])
    calls: list[str] = []

    def failing() -> str:
        calls.append("failing")
        raise RuntimeError("registry down")

    def fetch() -> str:
        calls.append("fetch")
        return "index"

    key = ("r.example", "base", "latest")
    with pytest.raises(RuntimeError):
        build.resolve_once(key, failing)
    assert build.resolve_once(key, fetch) == "index"
    assert build.resolve_once(key, fetch) == "index"
    assert calls == ["failing", "fetch"]
    assert PushAhead(RegistryOptions(), []).resolve_once(key, fetch) == "index"  # another build asks again
    assert calls == ["failing", "fetch", "fetch"]


def test_cancelling_a_session_on_a_registry_that_never_answers_holds_up_nothing():
    """The build is over and its parked session must go, but the registry accepts the
    connection and never answers: closing returns after the short stop wait, not after the
    read timeout (the DELETE goes on a daemon thread, which the process does not wait for)."""
    import socket

    from pybuildless.registry.ahead import STOP_WAIT, PushAhead

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing is ever read or answered
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        build = PushAhead(RegistryOptions(insecure_registries=(host,), retries=0), [])
        build.park(parse_reference(f"{host}/pushfaults/silent:1"), f"http://{host}/v2/pushfaults/silent/blobs/uploads/x")
        started = time.monotonic()
        build.close()
        assert time.monotonic() - started < STOP_WAIT + 3
