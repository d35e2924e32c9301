"""Push work a build starts before its image is complete, and what one build learns of its
registries that no later request of the same build needs to ask again.

- The push-permission check (Kaniko's CheckPushPermissions) opens an upload in each
  destination; instead of cancelling it (a DELETE) and opening another at the end (a
  POST), the session is kept and the image's config goes up in it with one PUT.
- As soon as the final stage's base is resolved, its layers are made to exist in every
  destination while the build runs: mounted from the base's repository in the same
  registry (distribution-spec "Mounting a blob from another repository"), or, in
  another registry, checked and uploaded (streamed from the base's registry).

Within one build (``begin`` to ``end``), a tag is resolved once however many platforms and
stages name it (``resolve_once``), and a blob pushed to one repository is not pushed again:
nothing to do in that repository, a mount into another of the registry (``note_blob``).

Importing this module loads no HTTP stack: a build that pushes nothing never needs one.
``push_image`` asks ``current(options)`` for this and uses what was done instead of
doing it again; whatever failed ahead is simply done again there. A session the push
never used is cancelled (distribution-spec "Cancel a blob upload") when the build
ends. A build that fails stops this work at once (``abandon``, and at the latest when the
process exits, before its threads are joined): queued blobs are never started, a running
upload stops at its next chunk and its session is cancelled; a blob already mounted or
uploaded stays, complete but named by no manifest, as any interrupted push leaves it (the
registry's garbage collection removes it; distribution-spec has no way to undo a mount).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future, wait
from typing import Callable, Iterable, Sequence, TypeVar

from pybuildless.errors import RegistryError
from pybuildless.image.descriptor import Descriptor, Digest
from pybuildless.image.model import Layer
from pybuildless.name import Reference
from pybuildless.registry.options import RegistryOptions

logger = logging.getLogger("pybuildless.registry.remote")
T = TypeVar("T")

_current: PushAhead | None = None
_current_lock = threading.Lock()

# How long a failed build waits for its running blob work to stop (it stops at its next chunk
# or request; this only bounds one stuck in the network, left to end with the process).
STOP_WAIT = 2.0


class Abandoned(RegistryError):
    """Blob work of a build that failed: stopped, not an error of its own."""


class PushAhead:
    """The destinations of one build and the blob work already started for them."""

    def __init__(self, options: RegistryOptions, refs: Sequence[Reference]) -> None:
        self.options = options
        self.refs = list({(r.registry, r.repository): r for r in refs}.values())  # one per repository
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], str] = {}
        self._blobs: dict[tuple[str, str, Digest], Future] = {}
        self.stopped = threading.Event()  # set when the build failed: blob work ends at once
        self._queue: deque[tuple[Future, Callable[[], str]]] = deque()  # blob work not started yet
        self._queue_lock = threading.Lock()
        self._workers = 0
        self._resolved: dict[tuple, Future] = {}  # ([method,] registry, repository, tag or digest)
        self._homes: dict[tuple[str, Digest], list[str]] = {}  # (registry, blob) -> repositories holding it

    def resolve_once(self, key: tuple, fetch: Callable[[], T]) -> T:
        """``fetch()`` once per build for a manifest reference, whatever the number of platforms
        or stages asking (at the same time or later): every platform then picks its manifest from
        the one index. A failure is not kept: the next asker tries again."""
        with self._lock:
            future = self._resolved.get(key)
            mine = future is None
            if mine:
                future = self._resolved[key] = Future()
        if not mine:
            return future.result()
        try:
            result = fetch()
        except BaseException as e:
            with self._lock:
                del self._resolved[key]
            future.set_exception(e)
            raise
        future.set_result(result)
        return result

    def note_blob(self, ref: Reference, digest: Digest) -> None:
        """``digest`` is now in ``ref``'s repository (this build pushed it there)."""
        with self._lock:
            homes = self._homes.setdefault((ref.registry, digest), [])
            if ref.repository not in homes:
                homes.append(ref.repository)

    def blob_home(self, ref: Reference, digest: Digest) -> str | None:
        """A repository of ``ref``'s registry this build put ``digest`` in: ``ref``'s own if so
        (nothing to ask), else the first (a mount from there, distribution-spec end-11)."""
        with self._lock:
            homes = list(self._homes.get((ref.registry, digest), ()))
        return ref.repository if ref.repository in homes else (homes[0] if homes else None)

    def park(self, ref: Reference, location: str) -> None:
        """Keep an upload session opened in ``ref``'s repository for the push to use."""
        with self._lock:
            old = self._sessions.pop((ref.registry, ref.repository), None)
            self._sessions[(ref.registry, ref.repository)] = location
        if old is not None:
            self._cancel(ref, old)

    def take_session(self, ref: Reference) -> str | None:
        with self._lock:
            return self._sessions.pop((ref.registry, ref.repository), None)

    def start_layers(self, layers: Sequence[Layer]) -> None:
        """Make the final stage's base layers exist in every destination, in the background."""
        from pybuildless.registry.blobpush import layer_opener, mount_source, push_blob, push_scopes

        unique = list({layer.digest: layer for layer in layers}.values())
        for ref in self.refs:
            sources = {s for s in (mount_source(layer, ref) for layer in unique) if s}
            scopes = push_scopes(ref, sources)  # the same set the push asks for: one token for both
            for layer in unique:
                key = (ref.registry, ref.repository, layer.digest)
                source = mount_source(layer, ref)
                with self._lock:
                    if key in self._blobs or source == ref.repository:
                        continue  # started already, or known to be there: the push skips it anyway
                    desc = Descriptor(layer.media_type, layer.digest, layer.size)

                    def work(ref=ref, desc=desc, layer=layer, source=source, scopes=scopes) -> str:
                        from pybuildless.registry.client import RegistryClient

                        self._check_stopped()
                        client = RegistryClient.for_reference(ref, self.options)
                        return push_blob(client, ref.repository, desc, layer_opener(layer, self._check_stopped),
                                         scopes, source, known_source=source is not None)

                    self._blobs[key] = self._start(work)

    def _start(self, work: Callable[[], str]) -> Future:
        """``work`` on up to ``parallel`` daemon threads of this build: a failed build's process
        exits without waiting for an upload stuck in the network (the shared pool's threads are
        joined at exit), and each thread keeps its connection for the next blob."""
        future: Future = Future()
        with self._queue_lock:
            self._queue.append((future, work))
            spawn = self._workers < max(2, self.options.parallel)
            if spawn:
                self._workers += 1
        if spawn:
            threading.Thread(target=self._work, name="push-ahead", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._queue_lock:
                if not self._queue:
                    self._workers -= 1
                    return
                future, work = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued (the build failed)
            try:
                future.set_result(work())
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits for it
                future.set_exception(e)

    def _check_stopped(self) -> None:
        if self.stopped.is_set():
            raise Abandoned("push work of a failed build stopped")

    def blob_result(self, ref: Reference, digest: Digest) -> str | None:
        """How a blob was made to exist in ``ref``'s repository ahead, waiting for it; None when
        it was not started, or failed (the push then does it itself)."""
        with self._lock:
            future = self._blobs.get((ref.registry, ref.repository, digest))
        if future is None:
            return None
        try:
            return future.result()
        except Exception as e:  # noqa: BLE001 - done again by the push, which reports its own failure
            logger.debug("layer %s for %s ahead of the push failed (%s); pushing it now", digest, ref.context, e)
            return None

    def close(self) -> None:
        """Cancel the sessions nobody used and stop the blob work nobody waited for: after a push
        there is none; after a failure (or a push that gave up) it is not needed any more."""
        self.stopped.set()  # this build's work is over: whatever still runs stops at its next step
        with self._queue_lock:
            queued, self._queue = list(self._queue), deque()
        for future, _ in queued:
            future.cancel()  # never started
        with self._lock:
            sessions, self._sessions = self._sessions, {}
            running = [future for future in self._blobs.values() if not future.done()]
        if queued or running:
            logger.debug("stopped %d queued and %d running blob upload(s) for the destinations", len(queued),
                         len(running))
        # the DELETEs on the same daemon threads: an unreachable registry holds up no exit
        cancels = [self._start(lambda ref=Reference(registry, repository, "latest", None), location=location:
                               self._cancel(ref, location))
                   for (registry, repository), location in sessions.items()]
        if running or cancels:
            _, late = wait(running + cancels, timeout=STOP_WAIT)
            if late:
                logger.debug("%d blob upload(s) or cancellations still under way", len(late))

    def _cancel(self, ref: Reference, location: str) -> None:
        from pybuildless.registry.client import RegistryClient

        RegistryClient.for_reference(ref, self.options)._cancel(location, (ref.scope("push,pull"),))


def begin(options: RegistryOptions, refs: Sequence[Reference]) -> PushAhead:
    """The push work of a new build (the one before it in this process is closed first).

    The destinations' registries are told the build will push there, so the first token
    each asks for covers them all (``tokens.BuildTokens``)."""
    global _current
    new = PushAhead(options, refs)
    with _current_lock:
        old, _current = _current, new
    if old is not None:
        old.close()
    expect(options, ((ref, "push,pull") for ref in new.refs))
    return new


def expect(options: RegistryOptions, needs: Iterable[tuple[Reference, str]]) -> None:
    """(reference, actions) this build will need, announced before the first request (a cache
    repository the build pushes to, the destinations): one token is asked for all of them."""
    needs = list(needs)
    if not needs:
        return
    from pybuildless.registry.sharing import shared_transport  # the HTTP stack: a push is coming

    for ref, actions in needs:  # the host's pulling transport shares the tokens (sharing.py)
        shared_transport(ref.api_host, options).expect((ref.scope(actions),))


def current(options: RegistryOptions) -> PushAhead | None:
    """The running build's push work, if it pushes with these very options."""
    with _current_lock:
        return _current if _current is not None and _current.options is options else None


def end(options: RegistryOptions) -> None:
    """The build is over: unused sessions are cancelled, work nobody waited for is stopped."""
    global _current
    with _current_lock:
        done = _current if _current is not None and _current.options is options else None
        if done is not None:
            _current = None
    if done is not None:
        done.close()


abandon = end  # a failed build: the same, and it is what ``close`` is for


def _at_exit() -> None:
    """A build that never reached its push failed: its blob work stops before the process
    joins its threads (the pool's workers would otherwise run every queued upload first)."""
    with _current_lock:
        left = _current
    if left is not None:
        end(left.options)


# threading's exit hooks run before the non-daemon threads are joined (atexit's only after):
# the blob work is stopped and an unused session cancelled before anything else is waited for.
threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
