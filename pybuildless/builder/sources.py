"""Where ``COPY --from`` and ``RUN --mount=from=`` read files: earlier stages or images.

A ``--from`` value is a stage (by name or index) when the Dockerfile has one of that name,
else an image reference, as in BuildKit. An image is resolved once per build (its cache key
is its manifest digest, known without downloading its layers) and laid down in a directory
of its own the first time its files are needed.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from pybuildless.builder.base import BaseImage, load_base
from pybuildless.builder.baseextract import apply_layers
from pybuildless.builder.copy import SourceRoot
from pybuildless.errors import BuildError, PybuildlessError

if TYPE_CHECKING:
    from pybuildless.builder.stage import StageResult
    from pybuildless.dockerfile import instructions as ins
    from pybuildless.dockerfile.parser import Dockerfile
    from pybuildless.image.descriptor import Platform
    from pybuildless.registry.options import RegistryOptions


class BuildSources:
    """The build context, the results of earlier stages and the images named by ``--from``."""

    def __init__(self, context: SourceRoot, dockerfile: Dockerfile, results: Mapping[int, StageResult], *,
                 platform: Platform, registry: RegistryOptions, blob_dir: Path, work: Path) -> None:
        self.context = context
        self._dockerfile = dockerfile
        self._results = results  # filled in by the build as its stages finish
        self._platform = platform
        self._registry = registry
        self._blob_dir = blob_dir
        self._work = work
        self._image_roots: dict[str, SourceRoot] = {}
        self._image_bases: dict[str, BaseImage] = {}  # resolved once per build
        self._image_lock = threading.Lock()

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
            apply_layers(base.layers, root)
            self._image_roots[ref] = SourceRoot(str(root), is_context=False, description=f"image {ref}")
        return self._image_roots[ref]

    def _image_base(self, ref: str) -> BaseImage:
        with self._image_lock:
            if ref not in self._image_bases:
                try:
                    self._image_bases[ref] = load_base(ref, platform=self._platform, registry=self._registry,
                                                       blob_dir=self._blob_dir, lazy=True)
                except PybuildlessError as e:  # BuildKit too reads a name that is no stage as an image
                    raise BuildError(f"--from={ref} is not a stage name, and as an image: {e}") from e
            return self._image_bases[ref]
