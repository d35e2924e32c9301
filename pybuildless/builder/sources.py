"""Where ``COPY --from`` and ``RUN --mount=from=`` read files: earlier stages or images.

A ``--from`` value is a stage (by name or index) when the Dockerfile has one of that name,
else an image reference, as in BuildKit. An image is resolved once per build (its cache key
is its manifest digest, known without downloading its layers) and laid down in a directory
of its own the first time its files are needed. FROM resolves its images here too, so an
image named by several FROMs and ``--from``s costs one lookup; with the layer store its
manifests and configs are read from the store (one HEAD by tag, nothing by digest).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from pybuildless.builder.base import BaseImage, load_base, load_base_ahead
from pybuildless.builder.baseextract import apply_layers
from pybuildless.builder.copy import SourceRoot
from pybuildless.errors import BuildError, PybuildlessError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pybuildless.builder.stage import StageResult
    from pybuildless.dockerfile import instructions as ins
    from pybuildless.dockerfile.parser import Dockerfile
    from pybuildless.image.descriptor import Platform
    from pybuildless.registry.options import RegistryOptions


class BuildSources:
    """The build context, the results of earlier stages and the images named by ``--from``."""

    def __init__(self, context: SourceRoot, dockerfile: Dockerfile, results: Mapping[int, StageResult], *,
                 platform: Platform, registry: RegistryOptions, blob_dir: Path, work: Path,
                 record_dir: Path | None = None) -> None:
        self.context = context
        self._dockerfile = dockerfile
        self._results = results  # filled in by the build as its stages finish
        self._platform = platform
        self._registry = registry
        self._blob_dir = blob_dir
        self._work = work
        self._image_roots: dict[str, SourceRoot] = {}
        self._record_dir = record_dir  # the layer store's root: manifests and configs kept by digest
        self._image_bases: dict[tuple, BaseImage] = {}  # resolved once per build
        self._image_lock = threading.Lock()
        self._image_locks: dict[tuple, threading.Lock] = {}

    def key(self, ref: str) -> str | None:
        """The final cache key of an earlier stage, or an image's manifest digest (resolved
        without downloading its layers: BuildKit keys an image source on its digest too)."""
        stage = self._dockerfile.stage_by_name_or_index(ref)
        if stage is not None:
            result = self._results.get(stage.index)
            return result.key if result is not None else None
        return f"image:{ref}@{self._image_base(ref).key}"

    def root(self, ref: str, inst: ins.Instruction) -> SourceRoot:
        """An earlier stage's final filesystem, or an image's."""
        stage = self._dockerfile.stage_by_name_or_index(ref)
        if stage is not None:
            result = self._results.get(stage.index)
            if result is None:
                raise inst.error(f"--from={ref}: stage {stage.index} has not been built")
            if result.ensure_root is not None:
                result.ensure_root()  # a stage taken whole from the cache has no files yet
            return SourceRoot(str(result.root), is_context=False, description=f"stage {ref}")
        if ref not in self._image_roots:
            base = self._image_base(ref)  # the image the cache key named, not a re-resolved tag
            root = Path(tempfile.mkdtemp(prefix="from-", dir=self._work))
            if self._record_dir is None or not _lay_from_store(base.layers, root, self._record_dir):
                apply_layers(base.layers, root)
            self._image_roots[ref] = SourceRoot(str(root), is_context=False, description=f"image {ref}")
        return self._image_roots[ref]

    def _image_base(self, ref: str) -> BaseImage:
        try:
            return self.base(ref, self._platform, lazy=True)
        except PybuildlessError as e:  # BuildKit too reads a name that is no stage as an image
            raise BuildError(f"--from={ref} is not a stage name, and as an image: {e}") from e

    def base(self, name: str, platform: Platform, *, lazy: bool, cache_dir: Path | None = None,
             push_ahead: bool = False) -> BaseImage:
        """The image ``name`` for ``platform`` (FROM's, or ``--from``'s), resolved once per build:
        every stage naming it builds on the same image, even if its tag moves meanwhile."""
        # with the store, how the layers are read does not depend on ``lazy``
        key = (name, platform, cache_dir, None if self._record_dir is not None else lazy)
        with self._image_lock:
            lock = self._image_locks.setdefault(key, threading.Lock())
        with lock:  # one lookup per image; stages resolving other images are not held up
            base = self._image_bases.get(key)
            if base is None:
                base = load_base(name, platform=platform, registry=self._registry, blob_dir=self._blob_dir,
                                 cache_dir=cache_dir, lazy=lazy, record_dir=self._record_dir, push_ahead=push_ahead)
                self._image_bases[key] = base
            elif push_ahead:
                load_base_ahead(base, self._registry)
        # each stage its own copy: a stage may change its base's lists, never another stage's
        return dataclasses.replace(base, config=copy.deepcopy(base.config), layers=list(base.layers))


def _lay_from_store(layers, root: Path, store_root: Path) -> bool:
    """Copy an image's layers onto ``root`` from the layer store (each downloaded and unpacked
    there once, for every build); False when the store cannot hold them: then they are extracted."""
    from pybuildless.store.copy import copy_layers
    from pybuildless.store.layers import LayerStore, StoreError

    try:
        leases = LayerStore(store_root).acquire_all(layers)
    except (StoreError, OSError) as e:
        log.info("--from image not laid from the layer store: %s", e)
        return False
    try:
        copy_layers([lease.path for lease in leases], root, root_meta=[lease.meta.root_entry for lease in leases],
                    implicit=[lease.layer.implicit_dirs() for lease in leases])
    finally:
        for lease in leases:
            lease.close()
    return True
