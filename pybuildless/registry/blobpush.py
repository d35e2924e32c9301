"""One blob into one repository in the fewest requests: nothing when it is known to be there,
a mount from another repository of the registry, else an upload (a small blob without asking
first). Shared by ``push`` (the push itself) and ``ahead`` (the work a build starts early).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, Callable

from pybuildless import transfer
from pybuildless.image.descriptor import Descriptor
from pybuildless.image.model import Layer, MountableLayer
from pybuildless.name import Reference
from pybuildless.registry.verify import CHUNK

if TYPE_CHECKING:  # the caller brings the client: a build that pushes nothing never loads the HTTP stack
    from pybuildless.registry.client import RegistryClient


class SizedBody:
    """A file object with a known length, so requests sends Content-Length, never chunked.

    Each one is one upload attempt as far as the progress display is concerned: the
    transport opens a fresh one per attempt and closes it after sending.
    """

    def __init__(self, f: BinaryIO, size: int, progress: transfer.Transfer = transfer.NULL_TRANSFER,
                 check: Callable[[], None] | None = None) -> None:
        self._f, self._size, self._pos = f, size, 0
        self._progress = progress
        self._check = check  # raises when the upload is to stop (its build failed): checked per chunk

    def __len__(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if self._check is not None:
            self._check()
        data = self._f.read(CHUNK if n is None or n < 0 else n)
        self._pos += len(data)
        self._progress.advance(len(data))
        return data

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            self._progress.finish()

    def __enter__(self) -> "SizedBody":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def layer_opener(layer: Layer, check: Callable[[], None] | None = None) -> Callable[[], SizedBody]:
    def open_layer() -> SizedBody:
        if check is not None:
            check()
        f = layer.open_compressed()
        return SizedBody(f, layer.size, transfer.start(str(layer.digest), layer.size, "pushing"), check)

    return open_layer


# Up to this size a blob is sent without asking first whether the repository has it: the
# HEAD (distribution-spec "Checking if content exists", optional) costs a round trip, about
# what sending the bytes again costs, and a blob just built is almost always new.
SMALL_BLOB = 256 << 10


def push_scopes(ref: Reference, sources: set[str]) -> tuple[str, ...]:
    """One token for everything a destination needs: push there, pull from the mount sources."""
    return (ref.scope("push,pull"),) + tuple(f"repository:{s}:pull" for s in sorted(sources - {ref.repository}))


def push_blob(client: RegistryClient, repository: str, desc: Descriptor, opener, scopes: tuple[str, ...],
              mount_from: str | None, *, known_source: bool = False, session: str | None = None) -> str:
    """Make ``desc`` exist in ``repository``: nothing when it is known to be there, a mount when
    another repository of the registry has it, else an upload (the only case that reads the blob).

    ``known_source``: ``mount_from`` is where the blob was read from (a base image's layer, or
    an earlier destination), so it is there: the mount is asked for at once, and a registry
    answers it 201 when the destination has the blob too, so no HEAD is needed first.
    ``session``: an upload already opened in ``repository`` (by the push-permission check);
    it is used, never left open.
    """
    small = 0 <= desc.size <= SMALL_BLOB
    if session is not None:  # one PUT into it costs no more than a HEAD or a mount would
        location = session
    else:
        if known_source and mount_from == repository:
            return "exists"  # the image was read from this repository: its manifest holds the blob
        if not (known_source and mount_from) and not small and client.blob_exists(repository, desc.digest,
                                                                                   scopes=scopes):
            return "exists"
        location = None
        if mount_from and mount_from != repository:
            location = client.mount_blob(repository, desc.digest, mount_from, scopes=scopes)
            if location is None:
                return "mounted"
    if small:
        client.upload_small(repository, desc, opener, scopes=scopes, location=location)
    else:
        client.upload_blob(repository, desc, opener, scopes=scopes, location=location)
    return "uploaded"


def mount_source(layer: Layer, ref: Reference) -> str | None:
    """The repository of ``ref``'s registry a base layer was read from, if any."""
    if isinstance(layer, MountableLayer) and getattr(layer.source, "registry", None) == ref.registry:
        return layer.source.repository
    return None
