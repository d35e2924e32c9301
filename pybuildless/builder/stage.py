"""StageBuilder: one Dockerfile stage from its base to its image.

The loop per instruction: expand (for the instructions that expand), execute
(the instruction's step, ``builder.commands.step_for``, says which paths it touched, or that the
whole root must be walked, or nothing), snapshot, write the layer when the
diff is not empty, and record history. Metadata-only steps get
``empty_layer`` history entries.

A stage builder is given only what it uses, never the whole build: its root
(``builder.stageroot``: files and snapshots), the parts of the build its steps may
reach (``StepParts``), how to write layers (``LayerWriting``), the layer cache as
the stage sees it (``StageCache``) and the build's time (``BuildClock``).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pybuildless.builder import imageconfig
from pybuildless.builder.base import BaseImage
from pybuildless.builder.commands import Outcome, StageState, StepContext, step_for
from pybuildless.builder.commands.step import Secrets, Sources
from pybuildless.cache.keys import chain
from pybuildless.builder.progress import Progress
from pybuildless.builder.stageroot import StageRoot
from pybuildless.dockerfile.args import StageEnv
from pybuildless.errors import PybuildlessError, at_instruction
from pybuildless.dockerfile import instructions as ins
from pybuildless.dockerfile.parser import Dockerfile, Stage, parse_onbuild_triggers
from pybuildless.fs.layer import whole_root_changes, write_layer
from pybuildless.fs.overlay import snapshot_tops, without_ignored
from pybuildless.fs.snapshot import Changes
from pybuildless.image.descriptor import Platform
from pybuildless.image.model import Layer, ManifestImage, build_image
from pybuildless.sandbox.base import Sandbox

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """A built stage: its image config, root and final cache key, for later stages and outputs."""

    index: int
    name: str | None
    image: ManifestImage
    root: Path
    config: dict[str, Any]
    key: str | None = None  # final cache key
    ensure_root: Callable[[], None] | None = None


@dataclass(frozen=True)
class StepParts:
    """The parts of the build a stage's steps may reach (``StepContext`` adds the stage's own state)."""

    sources: Sources
    secrets: Secrets
    scratch_dir: Path
    run_cache_dir: Path
    sandbox_for: Callable[[Path], Sandbox]  # the sandbox of a stage root, opened on first use
    platform: Platform | None = None  # what the stage is built for


@dataclass(frozen=True)
class LayerWriting:
    """How a stage writes its layers."""

    directory: Path
    compression: str = "gzip"
    level: int | None = None
    force_build_metadata: bool = False  # Kaniko: a layer (empty if need be) for every step
    single_snapshot: bool = False  # one layer for the whole stage (--single-snapshot, final stage only)


@dataclass(frozen=True)
class BuildClock:
    """The build's time. ``epoch`` (--reproducible, SOURCE_DATE_EPOCH) clamps layer mtimes and is
    then every history entry's and the image's time; ``created`` is it (or now) as RFC 3339."""

    epoch: int | None
    created: str

    @classmethod
    def at(cls, epoch: int | None) -> BuildClock:
        return cls(epoch, imageconfig.rfc3339(epoch))

    @property
    def fixed(self) -> str | None:
        return self.created if self.epoch is not None else None


@dataclass(frozen=True)
class StageCache:
    """The layer cache as one stage sees it: ``lookup`` (None without a cache) has ``get(key)``;
    ``put(key, layer, created_by, created)`` stores a step in the background."""

    lookup: Any | None = None
    put: Callable[..., None] = lambda *args: None
    caches_layers_of: Callable[[str], bool] = lambda keyword: True


class StageBuilder:
    def __init__(self, stage: Stage, base: BaseImage, *, root: StageRoot, parts: StepParts, layers: LayerWriting,
                 cache: StageCache, clock: BuildClock, dockerfile: Dockerfile, platform: Platform | None,
                 position: tuple[int, int], variables: StageEnv, progress: Progress) -> None:
        """``platform``: the build's target, written into the image config."""
        self.stage = stage
        self.base = base
        self.position = position
        self.root = root  # owns the files and the snapshots (builder.stageroot)
        self.layers = layers
        self.cache = cache
        self.clock = clock
        self.dockerfile = dockerfile
        self.progress = progress
        config = imageconfig.stage_config(base.config, platform)
        self.state = StageState(stage.index, stage.name, root.path, config, variables, layers=list(base.layers))
        # All a step may reach: this stage's state and the build's parts meant for steps.
        self.context = StepContext(
            self.state, parts.sources, parts.secrets, scratch_dir=parts.scratch_dir,
            run_cache_dir=parts.run_cache_dir, sandbox=lambda: parts.sandbox_for(root.path),
            output=progress.output, platform=parts.platform)
        self.key: str | None = base.key  # cache key chain; None once a step cannot be cached

    # -- filesystem -----------------------------------------------------------------
    def ensure_root(self) -> None:
        """Lay down the base and every layer taken from the cache so far, once, lazily:
        a stage whose steps all come from the cache never extracts anything."""
        if self.root.snapshotter is not None:
            return
        started = time.monotonic()
        how = self.root.lay(self.state.layers)
        if self.state.layers:
            self.progress.info(f"{how} {len(self.state.layers)} layer(s) of {self.base.description} "
                               f"in {time.monotonic() - started:.2f}s")

    def _snapshot(self, outcome: Outcome) -> Changes:
        snapshotter = self.root.snapshotter
        assert snapshotter is not None
        if outcome.upper is not None:
            # The RUN ran on an overlay: only the paths its upper dir held (now moved onto
            # the root), plus what was made before it, need looking at.
            tops = snapshot_tops(without_ignored(outcome.upper, self.root.ignore))
            return snapshotter.take_paths([*tops, *(p.lstrip("/") for p in outcome.made)])
        if outcome.paths is None or any(not p.strip("/") for p in outcome.paths):
            return snapshotter.take()  # asked for, or the step wrote to / itself
        return snapshotter.take_paths([p.lstrip("/") for p in outcome.paths])

    def _commit_layer(self, changes: Changes) -> Layer | None:
        return self._commit_layer_from(self.root.path, changes)

    def _commit_layer_from(self, root, changes: Changes, *, empty_ok: bool = False) -> Layer | None:
        # empty_ok / --force-build-metadata (Kaniko): an empty layer rather than none
        if changes.empty and not (empty_ok or self.layers.force_build_metadata):
            return None
        layer = write_layer(
            root, changes, self.layers.directory,
            compression=self.layers.compression, level=self.layers.level,
            clamp_mtime=self.clock.epoch, docker=self._docker_media_types,
        )
        return layer

    @property
    def _docker_media_types(self) -> bool:
        """Kaniko's rule: the image keeps its base's media-type family; zstd needs OCI."""
        return self.base.docker_media_types and self.layers.compression == "gzip"

    # -- the loop -------------------------------------------------------------------
    def run(self) -> StageResult:
        instructions = list(self._onbuild_triggers()) + list(self.stage.instructions)
        total = len(instructions) + 1
        self.progress.step(self.position, (1, total), self.stage.from_.original)
        # the root is laid down by the first step that needs files
        single = self.layers.single_snapshot
        for n, instruction in enumerate(instructions, start=2):
            self.progress.step(self.position, (n, total), instruction.original)
            started = time.monotonic()
            try:
                instruction = self.state.vars.apply(instruction)  # expands; ARG/ENV update the scope
                layer, cached = self._step(instruction, single)
            except (PybuildlessError, OSError) as e:
                raise self._located(e, instruction) from e
            self.progress.done(time.monotonic() - started, layer, cached=cached)
        if single:
            self.ensure_root()
            layer = self._commit_layer(self._snapshot(Outcome(created_by="", snapshot=True)))
            if layer is not None:
                # Every step above was recorded as empty; this entry stands for the one layer.
                self.state.layers.append(layer)
                imageconfig.add_history(self.state.config, "pybuildless --single-snapshot", empty_layer=False,
                                        created=self.clock.created)
        return self._result()

    def _step(self, instruction: ins.Instruction, single: bool) -> tuple[Layer | None, bool]:
        step = step_for(instruction)
        key = None
        if not step.touches_files:  # metadata only: no filesystem, folded into the chain
            outcome = step.execute(self.context)
            if self.key is not None:
                self.key = chain(self.key, [outcome.created_by])
            layer = self._commit_layer_from(self.root.path, Changes()) if self.layers.force_build_metadata else None
            if layer is not None:
                self.state.layers.append(layer)
            self._record(outcome, layer)
            return layer, False
        cache = self.cache.lookup
        if cache is not None and self.key is not None and not single:
            parts = step.cache_key(self.context)
            key = chain(self.key, parts) if parts is not None else None
            hit = cache.get(key) if key is not None and self.cache.caches_layers_of(instruction.keyword) else None
            if hit is not None:
                self.state.config = step.config_effect(self.state.config)  # execute() does not run
                if hit.layer is not None:
                    self.state.layers.append(hit.layer)
                    self._apply_cached(hit.layer)
                self._record(Outcome(created_by=hit.created_by, snapshot=True), hit.layer, hit.created)
                self.key = key
                return hit.layer, True
        self.ensure_root()
        outcome = step.execute(self.context)
        layer = None
        if outcome.layer_root is not None:
            layer = self._linked_layer(outcome, single)
        elif (outcome.snapshot or self.layers.force_build_metadata) and not single:
            layer = self._commit_layer(self._snapshot(outcome))
        if layer is None and outcome.layer_root is None and not single and self._always_a_layer(instruction):
            # An empty layer, as BuildKit v0.8 commits one for every RUN, COPY, ADD and WORKDIR
            # but WORKDIR / (dockerfile2llb/convert.go@eeb7b65ab7d6: commitToHistory(..., true, ...)
            # in dispatchRun/dispatchCopy/dispatchWorkdir), changed or not.
            layer = self._commit_layer_from(self.root.path, Changes(), empty_ok=True)
        if layer is not None:
            self.state.layers.append(layer)
        created = self._record(outcome, layer)
        self.key = key  # None after a step that cannot be cached: later keys are not trusted
        if key is not None and self.cache.caches_layers_of(instruction.keyword):
            self.cache.put(key, layer, outcome.created_by, created)
        return layer, False

    def _always_a_layer(self, instruction: ins.Instruction) -> bool:
        # keywords, not classes: the module of an instruction kind the build lacks stays unloaded
        if instruction.keyword == "WORKDIR":
            return self.state.workdir != "/"  # the directory it resolved to (set by the step)
        return instruction.keyword in ("RUN", "COPY", "ADD")

    def _linked_layer(self, outcome: Outcome, single: bool) -> Layer | None:
        """COPY --link: the layer is the copied tree alone; it is then applied to the root."""
        try:
            changes = whole_root_changes(outcome.layer_root)
            layer = self._commit_layer_from(outcome.layer_root, changes)
        finally:
            shutil.rmtree(outcome.layer_root, ignore_errors=True)
        if layer is None:
            return None
        self.root.apply([layer])
        assert self.root.snapshotter is not None
        self.root.snapshotter.take_paths([p.lstrip("/") for p in outcome.paths or ()])  # now part of the baseline
        return None if single else layer

    def _apply_cached(self, layer: Layer) -> None:
        """A hit after the root was already laid down: apply the cached layer to it too."""
        if self.root.snapshotter is None:
            return  # ensure_root() will lay it with the others
        self.root.apply([layer])
        self.root.snapshotter.baseline()

    def _record(self, outcome: Outcome, layer: Layer | None, created: str | None = None) -> str | None:
        """Add the step's history entry; returns its time. BuildKit's times (moby
        builder/builder-next/exporter/writer.go@v20.10.24, normalizeLayersAndHistory): an entry
        with a layer carries that layer's creation time (a cache hit keeps the first build's),
        one without gets its time from the layers around it in finalize(); a reproducible
        build (--reproducible, SOURCE_DATE_EPOCH) uses its one fixed time everywhere."""
        if self.clock.fixed is not None:
            created = self.clock.fixed
        elif layer is not None and created is None:
            created = imageconfig.rfc3339(None)
        imageconfig.add_history(self.state.config, outcome.created_by, empty_layer=layer is None,
                                created=created, comment=outcome.comment)
        return created

    def _located(self, error: BaseException, instruction: ins.Instruction) -> PybuildlessError:
        """The error as one naming the instruction's Dockerfile line (an ONBUILD trigger's:
        the FROM that replays it), with the file's text for the excerpt."""
        dockerfile = self.dockerfile
        where = instruction if instruction.path == dockerfile.path else self.stage.from_
        return at_instruction(error, path=where.path, line=where.line, end_line=where.end_line or where.line,
                              source_text=dockerfile.text or None)

    def _onbuild_triggers(self) -> list[ins.Instruction]:
        triggers = (self.base.config.get("config") or {}).get("OnBuild") or []
        if not triggers:
            return []
        self.progress.info(f"replaying {len(triggers)} ONBUILD trigger(s) of {self.base.description}")
        return parse_onbuild_triggers(list(triggers), self.dockerfile.escape,
                                      path=f"ONBUILD of {self.base.description}")

    def _result(self) -> StageResult:
        cfg = imageconfig.finalize(self.state.config, created=self.clock.fixed)
        image = build_image(cfg, self.state.layers, docker=self._docker_media_types)
        return StageResult(self.stage.index, self.stage.name, image, self.root.path, cfg, self.key, self.ensure_root)

