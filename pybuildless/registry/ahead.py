"""Push work a build starts before its image is complete.

- The push-permission check (Kaniko's CheckPushPermissions) opens an upload in each
  destination; instead of cancelling it (a DELETE) and opening another at the end (a
  POST), the session is kept and the image's config goes up in it with one PUT.
- As soon as the final stage's base is resolved, its layers are made to exist in every
  destination while the build runs: mounted from the base's repository in the same
  registry (distribution-spec "Mounting a blob from another repository"), or, in
  another registry, checked and uploaded (streamed from the base's registry).

Importing this module loads no HTTP stack: a build that pushes nothing never needs one.
``push_image`` asks ``current(options)`` for this and uses what was done instead of
doing it again; whatever failed ahead is simply done again there. A session the push
never used is cancelled (distribution-spec "Cancel a blob upload") when the build
ends, and at exit when it ended in a failure.
"""

from __future__ import annotations

import atexit
import logging
import threading
from concurrent.futures import Future
from typing import Sequence

from pybuildless.image.descriptor import Descriptor, Digest
from pybuildless.image.model import Layer
from pybuildless.name import Reference
from pybuildless.registry import jobs
from pybuildless.registry.options import RegistryOptions

logger = logging.getLogger("pybuildless.registry.remote")

_current: PushAhead | None = None
_current_lock = threading.Lock()


class PushAhead:
    """The destinations of one build and the blob work already started for them."""

    def __init__(self, options: RegistryOptions, refs: Sequence[Reference]) -> None:
        self.options = options
        self.refs = list({(r.registry, r.repository): r for r in refs}.values())  # one per repository
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], str] = {}
        self._blobs: dict[tuple[str, str, Digest], Future] = {}

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

                        client = RegistryClient.for_reference(ref, self.options)
                        return push_blob(client, ref.repository, desc, layer_opener(layer), scopes, source,
                                         known_source=source is not None)

                    self._blobs[key] = jobs.submit(work, size=max(2, self.options.parallel))

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
        """Cancel the sessions nobody used; let the started blob work finish."""
        with self._lock:
            sessions, self._sessions = self._sessions, {}
            blobs = list(self._blobs.values())
        for (registry, repository), location in sessions.items():
            self._cancel(Reference(registry, repository, "latest", None), location)
        for future in blobs:
            try:
                future.result()
            except Exception:  # noqa: BLE001 - only a head start; the push did the real work
                pass

    def _cancel(self, ref: Reference, location: str) -> None:
        from pybuildless.registry.client import RegistryClient

        RegistryClient.for_reference(ref, self.options)._cancel(location, (ref.scope("push,pull"),))


def begin(options: RegistryOptions, refs: Sequence[Reference]) -> PushAhead:
    """The push work of a new build (the one before it in this process is closed first)."""
    global _current
    new = PushAhead(options, refs)
    with _current_lock:
        old, _current = _current, new
    if old is not None:
        old.close()
    return new


def current(options: RegistryOptions) -> PushAhead | None:
    """The running build's push work, if it pushes with these very options."""
    with _current_lock:
        return _current if _current is not None and _current.options is options else None


def end(options: RegistryOptions) -> None:
    """The build is over: unused sessions are cancelled."""
    global _current
    with _current_lock:
        done = _current if _current is not None and _current.options is options else None
        if done is not None:
            _current = None
    if done is not None:
        done.close()


def _at_exit() -> None:
    with _current_lock:
        left = _current
    if left is not None:
        end(left.options)


atexit.register(_at_exit)
