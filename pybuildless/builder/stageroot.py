"""Stage roots: the filesystem one stage builds in, and the snapshots taken of it.

Three kinds, chosen in one place (``StageRoots.open``):

- ``DirectoryRoot``: a directory of the build's own, the base's layers extracted into it;
- ``StoreRoot``: the same directory made from the local layer store (``--layer-store``,
  on by default): an overlay mount of the stored layers, or a copy from the store
  (``builder.storeroot``, ``builder.overlayroot``); extraction when the store cannot hold
  a layer. Mounted, it stacks each RUN's upper dir as a lower dir (``keep_upper``,
  found by RUN through ``upper_keeper``) instead of copying it onto the root;
- ``InPlaceRoot``: the container's own ``/`` (Kaniko mode, ``builder.inplace``), wiped
  before each stage, with an ignore list that is never extracted into, snapshotted or
  removed.

A root is laid once (``lay``), lazily: a stage whose steps all come from the cache never
lays anything. From then on it has a ``snapshotter`` whose baseline is the laid root: a
walk of the root, except on a mounted root, where the lower dirs are the baseline and
nothing is walked (``builder.overlaysnapshot``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

from pybuildless.builder import inplace, storeroot
from pybuildless.builder.baseextract import apply_layers, extract_layers
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.snapshot import Snapshotter

if TYPE_CHECKING:
    from pybuildless.builder.options import BuildOptions
    from pybuildless.fs.changes import Changes
    from pybuildless.sandbox.base import UpperKeeper
    from pybuildless.store.layers import LayerStore

log = logging.getLogger(__name__)

_keepers: dict[Path, "UpperKeeper"] = {}  # mounted stage roots that stack RUN diffs, by path
_keepers_lock = threading.Lock()


def upper_keeper(path: Path) -> UpperKeeper | None:
    """What a RUN on the stage root at ``path`` hands its overlay upper dir to (``Sandbox.run``'s
    ``keep_upper``); None when the root takes diffs by copy only (a directory, in place)."""
    with _keepers_lock:
        return _keepers.get(path)


class Snapshots(Protocol):
    """What a stage builder asks of a root's snapshots: ``fs.snapshot.Snapshotter`` (a directory,
    in place, a copy from the store) or ``builder.overlaysnapshot.OverlaySnapshot`` (mounted)."""

    def take(self) -> Changes: ...

    def take_paths(self, paths: Iterable[str]) -> Changes: ...

    def baseline(self) -> None: ...

    def close(self) -> None: ...


class StageRoot(Protocol):
    path: Path
    ignore: IgnoreList  # paths never extracted into, snapshotted or removed
    snapshotter: Snapshots | None  # None until the root is laid

    def lay(self, layers: Sequence) -> str:
        """Lay ``layers`` (lowest first) onto the empty root and take the snapshot baseline;
        returns how, for the progress line ("extracted", "laid from the layer store")."""

    def apply(self, layers: Sequence) -> None:
        """Apply more layers onto the laid root (a cache hit, a ``COPY --link`` layer)."""

    def kept(self, layers: Sequence, spare: Path) -> Path:
        """Where later stages read this stage's files once it is done: the root itself, or
        ``spare`` with ``layers`` (the stage's image) applied when the root will not last."""

    def release(self) -> None:
        """Give back what the root holds besides its files (watches, mounts, store leases)."""


class DirectoryRoot:
    """A directory of the build's own; the base's layers are extracted into it."""

    def __init__(self, path: Path, *, retries: int = 0, ignore: IgnoreList | None = None) -> None:
        self.path = path
        self.ignore = ignore if ignore is not None else IgnoreList.for_root()
        self.snapshotter: Snapshots | None = None
        self._retries = retries  # Kaniko's --image-fs-extract-retry

    def lay(self, layers: Sequence) -> str:
        extract_layers(layers, self.path, ignore=self.ignore, retries=self._retries)
        self._baseline()
        return "extracted"

    def apply(self, layers: Sequence) -> None:
        apply_layers(layers, self.path, ignore=self.ignore)

    def kept(self, layers: Sequence, spare: Path) -> Path:
        return self.path  # the directory stays until the build's work dir goes

    def release(self) -> None:
        if self.snapshotter is not None:
            self.snapshotter.close()

    def _baseline(self) -> None:
        self.snapshotter = Snapshotter(self.path, self.ignore)
        self.snapshotter.baseline()


class StoreRoot(DirectoryRoot):
    """A directory laid from the layer store: mounted as an overlay of the stored layers where
    the build has its own mount namespace, else copied (cloned where it can) from the store."""

    def __init__(self, path: Path, store: LayerStore, *, retries: int = 0) -> None:
        super().__init__(path, retries=retries)
        self._store = store

    def lay(self, layers: Sequence) -> str:
        if layers and storeroot.lay_from_store(layers, self.path, store=self._store, retries=self._retries):
            from pybuildless.builder import overlayroot

            if overlayroot.is_mounted(self.path):
                # no walk: the lower dirs are the state, later changes are read from the dirs above them
                from pybuildless.builder.overlaysnapshot import OverlaySnapshot

                self.snapshotter = OverlaySnapshot(self.path, self.ignore)
                with _keepers_lock:
                    _keepers[self.path] = self.keep_upper
            else:
                self._baseline()
            return "laid from the layer store"
        return super().lay(layers)  # a layer the store cannot keep alone, or a store that cannot be written

    def keep_upper(self, upper: Path, changes: Changes) -> bool:
        """Stack a RUN's upper dir on the mounted root (its diff is then a lower dir, nothing
        is copied); False when the stack is full or the root cannot be remounted: the sandbox
        applies it instead."""
        from pybuildless.builder.overlaysnapshot import OverlaySnapshot

        snapshot = self.snapshotter
        return isinstance(snapshot, OverlaySnapshot) and snapshot.keep_run_upper(upper, changes)

    def release(self) -> None:
        with _keepers_lock:
            _keepers.pop(self.path, None)
        super().release()
        from pybuildless.builder import overlayroot

        overlayroot.unmount(self.path)  # nothing to do when it was copied


class InPlaceRoot(DirectoryRoot):
    """The container's own ``/``: wiped when opened, except what the ignore list protects."""

    def __init__(self, ignore: IgnoreList, *, retries: int = 0) -> None:
        super().__init__(Path("/"), retries=retries, ignore=ignore)

    def wipe(self) -> None:
        inplace.wipe_root(self.path, self.ignore)

    def kept(self, layers: Sequence, spare: Path) -> Path:
        # / is wiped before the next stage: the stage's files are laid down again elsewhere.
        spare.mkdir(parents=True)
        apply_layers(layers, spare)
        return spare


class StageRoots:
    """The stage roots of one build: which kind each stage gets, and their release at the end.

    ``store``: the layer store stage roots are made from; None to extract every base
    (``--no-layer-store``, and always in place, where the root is the container's own ``/``).
    """

    def __init__(self, *, store: LayerStore | None = None) -> None:
        self._store = store
        self._open: list[StageRoot] = []
        self._lock = threading.Lock()

    @classmethod
    def for_build(cls, options: BuildOptions) -> StageRoots:
        """The roots of a build run by ``options``; call before any thread starts (an overlay
        stage root needs the build's own mount namespace, entered by a single-threaded process)."""
        store = storeroot.store_for(options) if storeroot.uses_store(options) else None
        if store is not None:
            from pybuildless.builder import overlayroot

            overlayroot.enter_private_namespace()
        return cls(store=store)

    def open(self, directory: Path, options: BuildOptions) -> StageRoot:
        """A new, empty stage root; ``directory`` is the stage's own (made here), unused in place.
        ``options``: the build's, with the inputs and outputs in place mode protects."""
        retries = options.image_fs_extract_retry
        root: StageRoot
        if options.in_place:
            root = InPlaceRoot(in_place_ignore(options), retries=retries)
            root.wipe()
        else:
            path = directory / "rootfs"
            path.mkdir(parents=True)
            root = StoreRoot(path, self._store, retries=retries) if self._store is not None \
                else DirectoryRoot(path, retries=retries)
        with self._lock:
            self._open.append(root)
        return root

    def close(self) -> None:
        """Release every root, latest first; before the build's work dir (the mount points) goes."""
        with self._lock:
            roots, self._open = self._open, []
        for root in reversed(roots):
            try:
                root.release()
            except OSError as e:  # the build's result is written; a root that lingers is only logged
                log.warning("cannot release the stage root %s: %s", root.path, e)
        if self._store is not None:
            from pybuildless.builder import overlayroot

            overlayroot.unmount_all()


def in_place_ignore(options: BuildOptions) -> IgnoreList:
    return inplace.ignore_list(options.kaniko_dir, ignore_var_run=options.ignore_var_run,
                               extra=options.ignore_paths)


def clean_in_place(options: BuildOptions) -> None:
    """``--cleanup`` in place: / is wiped at the end of a build, as before each stage."""
    if options.in_place and options.cleanup:
        inplace.wipe_root(Path("/"), in_place_ignore(options))
