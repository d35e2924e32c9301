"""The local store of unpacked layers, content-addressed by diff_id.

Layout below the store root (``$XDG_CACHE_HOME/pybuildless`` by default)::

    layers/sha256/<hex>/meta.json   what was verified (LayerMeta)
    layers/sha256/<hex>/dirs        the directory list for the quick check
    layers/sha256/<hex>/whiteouts   what the layer's whiteouts hide (stacking checks)
    layers/sha256/<hex>/implicit    parent directories the tar did not carry (their metadata
                                    belongs to the layers below)
    layers/sha256/<hex>/used        its mtime is the last use (LRU)
    layers/sha256/<hex>/fs/         the layer alone, whiteouts in overlay form
    layers/.locks/sha256-<hex>      flock: exclusive to check/unpack/remove, shared while in use
    layers/.tmp/<hex>.<pid>.<rand>  an unpack in progress, or left by a crash

An entry becomes visible only by the rename of a complete temp dir that
already holds its metadata, so a half-unpacked layer is never served; temp
dirs are removed by the next process that holds the entry's lock (the holder
of an unpack always does) and by ``gc``. Every use re-checks the entry
(``dirs_fingerprint``; the full fingerprint with ``verify="full"``) and a
damaged entry is unpacked again from its blob.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from pybuildless.errors import ImageFormatError, PybuildlessError
from pybuildless.image.descriptor import Digest
from pybuildless.image.model import Layer
from pybuildless.store import spread, tree
from pybuildless.store.lock import EntryLock
from pybuildless.store.meta import LayerMeta, MetaError, read_dirs, write_dirs

log = logging.getLogger(__name__)

VERIFY_LEVELS = ("dirs", "full")
_NO_ROOT_ENTRY_NS = 1


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pybuildless"


class StoreError(PybuildlessError):
    """The store cannot be used (unwritable root, a layer that cannot be stored alone...)."""


@dataclass(frozen=True)
class StoredLayer:
    """A layer unpacked in the store: its diff_id, tree and metadata."""
    diff_id: Digest
    path: Path  # the unpacked tree (an overlay lower dir)
    meta: LayerMeta

    def implicit_dirs(self) -> frozenset[str]:
        return frozenset(read_dirs(self.path.parent / "implicit"))

    def whiteouts(self) -> list[str]:
        return read_dirs(self.path.parent / "whiteouts")


class LayerLease:
    """A stored layer held in use: not removed by gc or prune until ``close``."""

    def __init__(self, layer: StoredLayer, lock: EntryLock) -> None:
        self.layer = layer
        self._lock = lock

    @property
    def path(self) -> Path:
        return self.layer.path

    @property
    def meta(self) -> LayerMeta:
        return self.layer.meta

    def close(self) -> None:
        if self._lock.fd >= 0:
            _held_add(self._lock.path, -1)
            self._lock.close()

    def __enter__(self) -> "LayerLease":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class EntryInfo:
    """One store entry as pruning sees it: size on disk and last use."""
    diff_id: Digest
    path: Path
    disk_bytes: int
    last_used: float


class LayerStore:
    def __init__(self, root: Path | str | None = None, *, verify: str = "dirs") -> None:
        if verify not in VERIFY_LEVELS:
            raise ValueError(f"verify must be one of {VERIFY_LEVELS}")
        self.root = Path(root) if root is not None else default_root()
        self.verify_level = verify
        self.area = self.root / "layers"
        self.entries_dir = self.area / "sha256"
        self.locks_dir = self.area / ".locks"
        self.tmp_dir = self.area / ".tmp"
        self.unpacked = 0  # layers this object unpacked (for logs and tests)

    # -- paths --------------------------------------------------------------------
    def _prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for d in (self.area, self.entries_dir, self.locks_dir, self.tmp_dir):
                d.mkdir(exist_ok=True, mode=0o700)
        except OSError as e:
            raise StoreError(f"cannot use the layer store {self.root}: {e.strerror}") from None
        spread.mark_top_dir(self.tmp_dir)  # unpacks land away from inodes just deleted (store.spread); one ioctl

    def entry_dir(self, diff_id: Digest) -> Path:
        return self.entries_dir / _hex(diff_id)

    def _lock(self, hexname: str) -> EntryLock:
        return EntryLock(self.locks_dir / f"sha256-{hexname}")

    # -- use ----------------------------------------------------------------------
    def acquire(self, layer: Layer) -> LayerLease:
        """The stored, checked form of ``layer``, unpacking it from its blob when missing or damaged.

        The lease (a shared lock) keeps the entry from being removed; close it when the
        stage root is gone. Checking needs only the shared lock, so builds using an entry
        never wait for each other; the exclusive lock is taken only to unpack.
        """
        self._prepare()
        hexname = _hex(layer.diff_id)
        lock = self._lock(hexname)
        warned = False
        try:
            while True:
                lock.shared()  # waits only while another process unpacks this layer
                meta = self._checked(layer.diff_id)
                if meta is not None:
                    self._mark_used(hexname)
                    _held_add(lock.path, 1)
                    return LayerLease(StoredLayer(layer.diff_id, self.entry_dir(layer.diff_id) / "fs", meta), lock)
                if _held_count(lock.path):
                    raise StoreError(f"layer store entry {layer.diff_id} changed on disk while this build "
                                     f"uses it; run again")
                # never block for the exclusive lock: a process that unpacks then holds its
                # lease shared for a whole build, and a waiter would wait for that build
                if lock.try_exclusive():
                    if self._checked(layer.diff_id) is None:  # another process may have unpacked it meanwhile
                        if os.path.lexists(self.entry_dir(layer.diff_id)):
                            log.warning("layer store: entry %s changed on disk since it was verified; "
                                        "unpacking it again", layer.diff_id)
                        self._discard(hexname)
                        self._unpack(layer, hexname)
                    continue  # back to shared and a fresh check: converting is not atomic (flock(2))
                if not warned and os.path.lexists(self.entry_dir(layer.diff_id)):
                    log.warning("layer store: %s changed on disk and other builds use it; waiting for them "
                                "to unpack it again", layer.diff_id)
                    warned = True
                time.sleep(random.uniform(0.01, 0.05))  # another checker is racing for the same unpack
        except BaseException:
            lock.close()
            raise

    def acquire_all(self, layers: Iterable[Layer], *, jobs: int = 4) -> list[LayerLease]:
        """Leases for ``layers``, in order. Missing layers are fetched and unpacked side by side
        (each is stored alone, so they do not wait for each other): a download, its
        decompression and the files it creates overlap with the other layers'."""
        layers = list(layers)
        distinct = len({str(layer.diff_id) for layer in layers}) == len(layers)
        if jobs <= 1 or len(layers) <= 1 or not distinct:
            leases: list[LayerLease] = []
            try:
                for layer in layers:
                    leases.append(self.acquire(layer))
            except BaseException:
                for lease in leases:
                    lease.close()
                raise
            return leases
        with ThreadPoolExecutor(max_workers=min(jobs, len(layers)), thread_name_prefix="store") as pool:
            futures = [pool.submit(self.acquire, layer) for layer in layers]
            wait(futures)
        got = [f.result() for f in futures if f.exception() is None]
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            for lease in got:
                lease.close()
            raise failed[0]  # the lowest layer's failure, as one after another would report it
        for lease in got:  # last use in layer order, as one after another gives: the lowest is the oldest
            self._mark_used(_hex(lease.layer.diff_id))
        return got

    def lookup(self, diff_id: Digest) -> LayerMeta | None:
        """The entry's metadata if it is present (not checked, not locked)."""
        try:
            return LayerMeta.from_json((self.entry_dir(diff_id) / "meta.json").read_bytes())
        except (OSError, MetaError):
            return None

    def verify(self, diff_id: Digest) -> bool:
        """Full check of one entry (every inode); False when missing or damaged. A shared lock:
        reading needs only that no unpack or removal runs, and builds may hold the entry."""
        self._prepare()
        with self._lock(_hex(diff_id)) as lock:
            lock.shared()
            return self._checked(diff_id, level="full") is not None

    def entries(self) -> Iterator[EntryInfo]:
        try:
            names = sorted(os.listdir(self.entries_dir))
        except FileNotFoundError:
            return
        for name in names:
            path = self.entries_dir / name
            meta = self.lookup(Digest("sha256", name))
            try:
                used = os.lstat(path / "used").st_mtime if meta is not None else 0.0
            except OSError:
                used = 0.0
            # an unreadable entry: no size, never used (the first to go)
            yield EntryInfo(Digest("sha256", name), path, meta.disk_bytes if meta is not None else 0, used)

    # -- checking -----------------------------------------------------------------
    def _checked(self, diff_id: Digest, level: str | None = None) -> LayerMeta | None:
        entry = self.entry_dir(diff_id)
        meta = self.lookup(diff_id)
        if meta is None:
            if entry.exists():
                log.debug("layer store: entry %s has no readable metadata", diff_id)
            return None
        if meta.diff_id != str(diff_id) or meta.fingerprint_scheme != tree.FINGERPRINT_SCHEME:
            log.debug("layer store: entry %s was written differently", diff_id)
            return None
        level = level or self.verify_level
        fs = os.fspath(entry / "fs")
        try:
            if level == "full":
                ok = tree.summarize(fs).fingerprint == meta.fingerprint
            else:
                ok = tree.dirs_fingerprint(fs, read_dirs(entry / "dirs")) == meta.dirs_fingerprint
        except OSError:
            ok = False
        if not ok:
            log.debug("layer store: entry %s differs from its fingerprint", diff_id)
            return None
        return meta

    def _mark_used(self, hexname: str) -> None:
        used = self.entries_dir / hexname / "used"
        now = time.time_ns()  # not the file system's coarse clock: uses close together stay ordered
        try:
            os.utime(used, ns=(now, now))
        except FileNotFoundError:
            used.touch()

    # -- unpacking ----------------------------------------------------------------
    def _unpack(self, layer: Layer, hexname: str) -> LayerMeta:
        """Unpack into a temp dir, verify, record, rename into place (the caller holds the lock)."""
        tmp = self.tmp_dir / f"{hexname}.{os.getpid()}.{os.urandom(4).hex()}"
        tmp.mkdir(mode=0o700)
        try:
            fs = tmp / "fs"
            fs.mkdir(mode=0o755)
            # a time no tar header gives (whole seconds): still there after extraction means
            # the layer had no "./" entry and must not change the root it is laid on
            os.utime(fs, ns=(_NO_ROOT_ENTRY_NS, _NO_ROOT_ENTRY_NS))
            started = time.monotonic()
            # a parent the tar lacks gets its creation time: later than any header's, barring
            # clocks set wrong (such a directory is then only treated as made here)
            started_ns = time.time_ns()
            from pybuildless.fs.extract import extract_layer  # only a layer not yet stored loads tar

            with layer.open_compressed() as blob:
                stats = extract_layer(blob, fs, whiteouts=False, expect_diff_id=layer.diff_id,
                                      expect_digest=layer.digest)
            root_entry = os.stat(fs).st_mtime_ns != _NO_ROOT_ENTRY_NS
            opaque_attr = tree.opaque_xattr()
            form = tree.to_overlay_form(os.fspath(fs), opaque_attr)
            summary = tree.summarize(os.fspath(fs), made_after_ns=started_ns)
            meta = LayerMeta(
                diff_id=str(stats.diff_id), blob_digest=str(stats.digest),
                uncompressed_bytes=stats.uncompressed_size, entries=stats.entries, files=stats.files,
                dirs=stats.dirs, symlinks=stats.symlinks, hardlinks=stats.hardlinks, specials=stats.specials,
                whiteouts=form.whiteouts, opaque_dirs=form.opaque_dirs, char_whiteouts=form.char_whiteouts,
                opaque_xattr=opaque_attr, root_entry=root_entry,
                owners_applied=opaque_attr.startswith("trusted."),  # only real root can chown to any id
                tree_entries=summary.entries, disk_bytes=summary.disk_bytes,
                fingerprint_scheme=tree.FINGERPRINT_SCHEME, fingerprint=summary.fingerprint,
                dirs_fingerprint=summary.dirs_fingerprint, unpacked_at=time.time(),
            )
            write_dirs(tmp / "dirs", summary.dirs)
            write_dirs(tmp / "whiteouts", form.paths)
            write_dirs(tmp / "implicit", summary.implicit_dirs)
            (tmp / "meta.json").write_bytes(meta.to_json())
            (tmp / "used").touch()
            os.rename(tmp, self.entries_dir / hexname)
        except ImageFormatError as e:
            _remove_tree(tmp)
            raise StoreError(f"layer {layer.diff_id} cannot be stored: {e}") from None
        except BaseException:
            _remove_tree(tmp)
            raise
        with _held_mutex:
            self.unpacked += 1
        log.debug("layer store: unpacked %s (%d entries) in %.2fs", layer.diff_id, summary.entries,
                  time.monotonic() - started)
        return meta

    def _discard(self, hexname: str) -> None:
        """Remove a damaged entry and this entry's leftover temp dirs (the caller holds the lock)."""
        entry = self.entries_dir / hexname
        if os.path.lexists(entry):
            trash = self.tmp_dir / f"{hexname}.trash.{os.urandom(4).hex()}"
            os.rename(entry, trash)
            _remove_tree(trash)
        for name in os.listdir(self.tmp_dir):
            if name.startswith(hexname + "."):
                _remove_tree(self.tmp_dir / name)

    def remove_if_unused(self, diff_id: Digest) -> bool:
        """Remove one entry unless it is in use (a lease or an unpack holds its lock)."""
        hexname = _hex(diff_id)
        with self._lock(hexname) as lock:
            if not lock.try_exclusive():
                return False
            self._discard(hexname)
        return True

    def clean_temps(self) -> int:
        """Remove temp dirs left by crashed unpacks (never one whose unpack is still running)."""
        removed = 0
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            hexname = name.partition(".")[0]
            with self._lock(hexname) as lock:
                if lock.try_exclusive():
                    _remove_tree(self.tmp_dir / name)
                    removed += 1
        return removed


# entries this process holds leases on (lock path -> count): an entry found damaged
# while held here cannot wait for its exclusive lock (that would wait for ourselves)
_held: dict[Path, int] = {}
_held_mutex = threading.Lock()


def _held_add(path: Path, n: int) -> None:
    with _held_mutex:
        count = _held.get(path, 0) + n
        if count > 0:
            _held[path] = count
        else:
            _held.pop(path, None)


def _held_count(path: Path) -> int:
    with _held_mutex:
        return _held.get(path, 0)


def _hex(diff_id: Digest) -> str:
    if diff_id.algorithm != "sha256" or len(diff_id.hex) != 64 or not all(c in "0123456789abcdef" for c in diff_id.hex):
        raise StoreError(f"the layer store keeps sha256 diff_ids only, not {diff_id}")
    return diff_id.hex


def _remove_tree(path: Path) -> None:
    """rmtree that copes with read-only directories when not root."""
    def onerror(func, p, exc_info):
        parent = os.path.dirname(p)
        try:
            mode = os.lstat(parent).st_mode
            if stat.S_ISDIR(mode):
                os.chmod(parent, stat.S_IMODE(mode) | 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)
