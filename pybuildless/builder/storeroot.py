"""A stage's base layers laid from the local layer store (``--layer-store``).

Each layer is unpacked and verified once into the store (``pybuildless.store``)
and copied from there onto the stage root: cloned where the filesystem has
reflinks, else copied in the kernel; both skip decompressing and parsing the
tar, and the download too once the layer is stored. The result is the root the
tars give when applied in order (``store.copy`` says where it can differ: a
later layer's path under a symlink of an earlier one is not followed).

Used only for stage roots in a plain directory: in place, the root is the
container's own ``/`` and keeps the extraction path. A layer the store cannot
keep alone (a hard link to a file of a lower layer) sends the stage back to
plain extraction, as does an ignore list, which only the extractor applies, and
a store that cannot be written.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

from pybuildless.errors import PybuildlessError
from pybuildless.store.copy import copy_layers
from pybuildless.store.layers import LayerStore, StoreError

log = logging.getLogger(__name__)


def store_for(options) -> LayerStore:
    """The store a build uses: below ``--cache-dir`` when given, else ``$XDG_CACHE_HOME/pybuildless``."""
    return LayerStore(options.cache_dir)


def uses_store(options) -> bool:
    """In place the root is the container's own ``/``: extracted there as before, no store."""
    return options.layer_store and not options.in_place


def record_dir(options) -> Path | None:
    """Where base manifests and configs are kept by digest: the store's root, when the store is used."""
    return store_for(options).root if uses_store(options) else None


def collect_after_build(options) -> None:
    """Keep the store within ``--layer-store-max-size`` (least recently used first). Runs after
    the build's own leases are gone; entries other builds hold are never removed."""
    if not uses_store(options) or options.layer_store_max_size is None:
        return
    from pybuildless.store.gc import collect

    store = store_for(options)
    if not store.area.is_dir():
        return
    try:
        result = collect(store, options.layer_store_max_size)
    except OSError as e:  # the build is done; a store that cannot be trimmed is no reason to fail it
        log.warning("layer store %s: size limit not applied: %s", store.root, e)
        return
    if result.removed:
        log.info("layer store: removed %d least recently used layer(s) (%d bytes) to stay within %d bytes",
                 len(result.removed), result.freed_bytes, options.layer_store_max_size)


def lay_from_store(layers: Sequence, root: Path, *, store: LayerStore, retries: int = 0,
                   sleep: Callable[[float], None] = time.sleep) -> bool:
    """Lay ``layers`` (lowest first) onto the empty directory ``root`` from ``store``.

    False when the store cannot hold one of them: the caller extracts as before.
    ``retries``: Kaniko's --image-fs-extract-retry, for fetching and unpacking.
    """
    for attempt in range(retries + 1):
        try:
            leases = store.acquire_all(layers)
            break
        except StoreError as e:
            log.info("not using the layer store for this stage: %s", e)
            return False
        except OSError as e:  # the store's own disk (full, read-only...): the stage root may still do
            log.warning("not using the layer store for this stage: %s", e)
            return False
        except PybuildlessError as e:
            if attempt == retries:
                raise
            delay = 2 ** attempt
            log.warning("storing the base image's layers failed (%s); retry %d/%d in %ds "
                        "(--image-fs-extract-retry)", e, attempt + 1, retries, delay)
            sleep(delay)
    from pybuildless.builder import overlayroot

    try:
        if overlayroot.mount_root(leases, root):
            log.debug("stage root %s: an overlay of %d stored layer(s)", root, len(leases))
            return True  # the leases stay held until the mount goes
    except BaseException:
        for lease in leases:
            lease.close()
        raise
    try:
        stats = copy_layers([lease.path for lease in leases], root,
                            root_meta=[lease.meta.root_entry for lease in leases],
                            implicit=[lease.layer.implicit_dirs() for lease in leases])
    finally:
        for lease in leases:
            lease.close()
    log.debug("laid %d stored layer(s): %d entries, %d files cloned, %d copied", len(leases), stats.entries,
              stats.cloned, stats.copied)
    return True
