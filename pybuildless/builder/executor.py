"""run_build: the whole build, from flags to pushed image.

1. open the context, find and parse the Dockerfile, load .dockerignore;
2. resolve meta ARGs and plan the stages the target needs (others are skipped);
3. build each stage in its own root directory (chroot isolation) from its base;
4. write the final image to every destination and output file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from pybuildless.builder import cleanup
from pybuildless.builder.base import BaseImage
from pybuildless.builder import storeroot
from pybuildless.builder.context import open_context, resolve_dockerfile
from pybuildless.builder.copysources import SourceRoot
from pybuildless.builder.options import BuildOptions
from pybuildless.builder.platforms import PlatformPlan, parse_platforms, plan_platform
from pybuildless.builder.progress import BufferedProgress, Progress
from pybuildless.builder.publish import check_push_permissions, publish, publish_index
from pybuildless.builder.runsupport import Sandboxes, Secrets, run_cache_dir
from pybuildless.builder.sources import BuildSources
from pybuildless.builder.stage import BuildClock, LayerWriting, StageBuilder, StageCache, StageResult, StepParts
from pybuildless.builder.stageroot import StageRoots, clean_in_place
from pybuildless.dockerfile.args import GlobalArgs, StageEnv, unused_build_args
from pybuildless.dockerfile.dockerignore import load_dockerignore
from pybuildless.dockerfile.parser import Dockerfile, load_dockerfile
from pybuildless.errors import PybuildlessError, UsageError, at_instruction
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Platform
from pybuildless.log import report_error_source
from pybuildless.name import parse_reference
from pybuildless.registry import ahead

if TYPE_CHECKING:
    from pybuildless.builder.multiplatform import SharedStages
    from pybuildless.registry.options import RegistryOptions

log = logging.getLogger(__name__)


class BuildRun:
    """What the stages of one build share: options, directories, times, results and the layer
    cache; and the parts a step may reach, each an object of its own (``sources``, ``sandboxes``,
    ``secrets``, ``run_cache_dir``), handed to steps through ``StepContext``."""

    def __init__(self, options: BuildOptions, work: Path, dockerfile: Dockerfile, context_source: SourceRoot,
                 platform: Platform, final_index: int, blob_dir: Path | None = None) -> None:
        self.options = options
        self.work = work
        self.dockerfile = dockerfile
        self.platform = platform
        self.final_index = final_index
        self.registry = options.registry
        self.layer_dir = work / "layers"
        self.blob_dir = blob_dir or work / "blobs"  # shared by the platforms of one build: a base pulled once
        self.scratch_dir = work / "scratch"
        for d in (self.layer_dir, self.blob_dir, self.scratch_dir):
            d.mkdir(parents=True, exist_ok=True)
        epoch = options.source_date_epoch
        if epoch is None and options.reproducible:
            epoch = 0
        self.clock = BuildClock.at(epoch)
        self.results: dict[int, StageResult] = {}
        self.stage_platforms: dict[int, Platform] = {}  # what each stage is built for (FROM --platform)
        self.scopes: dict[int, StageEnv] = {}
        self.sources = BuildSources(context_source, dockerfile, self.results, platform=platform,
                                    registry=self.registry, blob_dir=self.blob_dir, work=work,
                                    record_dir=storeroot.record_dir(options))
        self.sandboxes = Sandboxes(options.isolation, scratch_parent=self.scratch_dir,
                                   overlay=options.overlay_snapshots)
        self.secrets = Secrets(options.secrets)
        self.run_cache_dir = run_cache_dir(options)
        self.cache = open_layer_cache(options, self.registry, platform)
        self._cache_pushes: list[Future] = []
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cache-push")

    def cache_for(self, index: int):
        """The layer cache for stage ``index``'s steps: entries labelled with the stage's platform."""
        if self.cache is None:
            return None
        from pybuildless.builder.multiplatform import cache_for_platform

        return cache_for_platform(self.cache, self.stage_platforms.get(index, self.platform))

    def cache_put(self, key: str, layer, created_by: str, created: str | None = None, cache=None) -> None:
        """Store a step in the cache in the background; a failure only warns (as in Kaniko)."""
        cache = cache or self.cache
        if cache is None:
            return
        self._cache_pushes.append(self._pool.submit(cache.put, key, layer, created_by, created))

    def wait_for_cache(self) -> None:
        for future in self._cache_pushes:
            try:
                future.result()
            except Exception as e:  # noqa: BLE001 - a cache that cannot be written must not fail the build
                log.warning("could not store a layer in the cache: %s", e)
        self._cache_pushes.clear()

    def step_parts(self, index: int) -> StepParts:
        """What the steps of stage ``index`` may reach of the build."""
        return StepParts(self.sources, self.secrets, scratch_dir=self.scratch_dir, run_cache_dir=self.run_cache_dir,
                         sandbox_for=self.sandboxes.for_root, platform=self.stage_platforms.get(index))

    def stage_cache(self, index: int) -> StageCache:
        cache = self.cache_for(index)
        return StageCache(cache, functools.partial(self.cache_put, cache=cache), self.options.caches_layers_of)

    def layer_writing(self, index: int) -> LayerWriting:
        o = self.options
        return LayerWriting(self.layer_dir, o.compression, o.compression_level,
                            force_build_metadata=o.force_build_metadata,
                            single_snapshot=o.single_snapshot and index == self.final_index)

    def close(self) -> None:
        self.wait_for_cache()
        self._pool.shutdown()
        self.sandboxes.close()


def _check_outputs(o: BuildOptions) -> None:
    for d in o.destinations:
        parse_reference(d)  # a bad --destination fails before any work
    if o.in_place:
        from pybuildless.builder import inplace

        inplace.check_allowed(explicit_env=os.environ.get(inplace.ENV_SELECT) == "inplace", force=o.force)


def _protect_inputs(options: BuildOptions, context_root: Path, dockerfile_path: str) -> BuildOptions:
    """In place, / is wiped between stages: the context, the Dockerfile and the output
    locations must never be part of what is wiped or snapshotted."""
    keep = [str(context_root)]
    if dockerfile_path != "-":
        keep.append(os.path.dirname(dockerfile_path))
    for out in (options.tar_path, options.oci_layout_path, options.digest_file,
                options.image_name_with_digest_file, options.image_name_tag_with_digest_file):
        if out is not None:
            keep.append(str(Path(out).absolute().parent if options.oci_layout_path != out else Path(out).absolute()))
    keep = [k for k in keep if os.path.abspath(k) != "/"]
    return dataclasses.replace(options, ignore_paths=options.ignore_paths + tuple(keep))


def _work_dir(options: BuildOptions) -> Path:
    parent = options.work_dir
    if options.in_place:
        # Scratch lives under the executor's own (ignored) prefix, never in the built root.
        parent = options.kaniko_dir
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="pybuildless-", dir=parent))


def run_build(options: BuildOptions) -> None:
    _check_outputs(options)
    # before any thread starts (the permission check below may start one): overlay stage roots
    roots = StageRoots.for_build(options)
    check_push_permissions(options, options.registry)  # before any work, as Kaniko does
    started = time.monotonic()
    work = _work_dir(options)
    cleanup.start(work, in_place=options.in_place)
    progress = Progress()
    succeeded = False
    try:
        with open_context(options.context, stdin=sys.stdin.buffer, workdir=work,
                          sub_path=options.context_sub_path, git=options.git) as context:
            dockerfile_path = str(resolve_dockerfile(options.dockerfile, context.root, workdir=work)) \
                if options.dockerfile != "-" else "-"
            dockerfile = load_dockerfile(dockerfile_path)
            matcher = load_dockerignore(str(context.root), None if dockerfile_path == "-" else dockerfile_path)
            context_source = SourceRoot(str(context.root), is_context=True, ignore=matcher)
            if options.in_place:
                options = _protect_inputs(options, context.root, dockerfile_path)
            images = _build_all(options, work, dockerfile, context_source, progress, roots)
        if len(images) == 1:
            digest = publish(images[0], options, options.registry, progress)
        else:
            digest = publish_index(images, options, options.registry, progress)
        progress.info(f"built {digest} in {time.monotonic() - started:.1f}s")
        succeeded = True
    except PybuildlessError as e:
        report_error_source(e)  # the Dockerfile lines it names, as BuildKit prints them
        raise
    finally:
        if not succeeded:  # base layers still going up to the destinations: stop them now
            ahead.abandon(options.registry)
        roots.close()  # before removing the work dir, which holds the mount points
        cleanup.finish(work, in_place=options.in_place, succeeded=succeeded)  # off the critical path when it can
        storeroot.collect_after_build(options)


def _build_all(options: BuildOptions, work: Path, dockerfile: Dockerfile, context_source: SourceRoot,
               progress: Progress, roots: StageRoots) -> list:
    """The image of every target platform (``--custom-platform a,b``), in the order given."""
    targets = parse_platforms(options.custom_platform)
    plan = functools.partial(plan_platform, options.build_args, options.target, dockerfile)
    build = functools.partial(_build, dockerfile=dockerfile, context_source=context_source, roots=roots)
    if len(targets) == 1:
        return [build(plan(targets[0]), options, work, progress, None)]
    from pybuildless.builder.multiplatform import build_platforms

    return build_platforms(options, work, targets, progress, plan, build)


def _build(prepared: PlatformPlan, options: BuildOptions, work: Path, progress: Progress,
           shared: SharedStages | None, dockerfile: Dockerfile, context_source: SourceRoot, roots: StageRoots):
    platform, glob, plan = prepared.platform, prepared.glob, prepared.plan
    build_args = dict(options.build_args)
    run = BuildRun(options, work, dockerfile, context_source, platform, plan.target,
                   blob_dir=None if shared is None else work.parent / "blobs")
    run.stage_platforms = prepared.stage_platforms
    build_stage = functools.partial(_build_stage, roots) if shared is None \
        else functools.partial(_shared_stage, shared, {}, roots)
    for name in unused_build_args(dockerfile.meta_args, [dockerfile.stages[i].instructions for i in plan.order],
                                  build_args):
        progress.warn(f"build-arg {name!r} was not consumed by any ARG")
    for skipped in plan.skipped(dockerfile):
        log.debug("skipping stage %d: the target does not need it", skipped)
    in_place = options.in_place
    positions = {index: n for n, index in enumerate(plan.order, start=1)}
    try:
        # In place there is one root (/), so stages run one after another; otherwise the
        # stages of a level do not depend on each other and run side by side.
        levels = [(i,) for i in plan.order] if in_place else [tuple(sorted(level)) for level in plan.levels]
        jobs = max(1, min(os.cpu_count() or 1, options.jobs))
        for level in levels:
            if len(level) == 1 or jobs == 1:
                for index in level:
                    build_stage(run, plan, glob, index, positions[index], progress)
                continue
            buffers = {index: BufferedProgress() for index in level}
            with ThreadPoolExecutor(max_workers=min(jobs, len(level)), thread_name_prefix="stage") as pool:
                futures = {index: pool.submit(build_stage, run, plan, glob, index, positions[index], buffers[index])
                           for index in level}
            for index in level:
                buffers[index].replay(progress)
            for index in level:
                futures[index].result()  # the first failure in stage order wins
        clean_in_place(options)
        return run.results[plan.target].image
    finally:
        run.close()


def _shared_stage(shared: SharedStages, known: dict[int, str], roots: StageRoots, run: BuildRun, plan,
                  glob: GlobalArgs, index: int, position: int, progress: Progress) -> None:
    """A stage of one of several platforms: built here, or taken from the platform that built it."""
    from pybuildless.builder.multiplatform import stage_identity

    identity = stage_identity(run.dockerfile, plan, glob.values, run.stage_platforms, run.platform, index, known)
    known[index] = identity

    def build():
        _build_stage(roots, run, plan, glob, index, position, progress)
        return run.results[index], run.scopes[index]

    (result, scope), owner = shared.build_once(identity, run.platform, build)
    if owner is not None:
        run.results[index] = result
        reused = scope.child()
        reused.globals = glob  # a later ``ARG TARGETARCH`` in a child stage reads this platform's value
        run.scopes[index] = reused
        name = run.dockerfile.stages[index].name or index
        progress.info(f"stage {name}: same inputs as for {owner}, built once")


def _build_stage(roots: StageRoots, run: BuildRun, plan, glob: GlobalArgs, index: int, position: int,
                 progress: Progress) -> None:
    options = run.options
    stage = run.dockerfile.stages[index]
    build_args = dict(options.build_args)
    stage_dir = run.work / "stages" / str(index)
    root = roots.open(stage_dir, options)
    base_spec = plan.bases[index]
    if base_spec.stage is not None:
        parent = run.results[base_spec.stage]
        base = BaseImage(parent.config, list(parent.image.layers()), f"stage {base_spec.stage}",
                         _is_docker(parent), key=parent.key)
        scope = run.scopes[base_spec.stage].child()
    else:
        try:
            # one lookup per image for the whole build; the final stage's base layers go to the
            # destinations while the build runs
            base = run.sources.base(base_spec.image or "scratch", run.stage_platforms[index],
                                    cache_dir=options.cache_dir if options.cache else None, lazy=options.cache,
                                    push_ahead=index == plan.target)
        except (PybuildlessError, OSError) as e:  # a bad or missing base names its FROM line
            where = stage.from_
            raise at_instruction(e, path=where.path, line=where.line, end_line=where.end_line or where.line,
                                 source_text=run.dockerfile.text or None) from e
        env_list = (base.config.get("config") or {}).get("Env") or []
        scope = StageEnv(glob, build_args, image_env=env_list)
    builder = StageBuilder(stage, base, root=root, parts=run.step_parts(index), layers=run.layer_writing(index),
                           cache=run.stage_cache(index), clock=run.clock, dockerfile=run.dockerfile,
                           platform=run.platform, position=(position, len(plan.order)), variables=scope,
                           progress=progress)
    if index == plan.target and options.labels:
        labels = builder.state.container_config.get("Labels") or {}
        builder.state.container_config["Labels"] = {**labels, **dict(options.labels)}
    result = builder.run()
    if any(index in deps for deps in plan.deps.values()):  # read by COPY --from of a later stage
        kept = root.kept(result.image.layers(), stage_dir / "rootfs")
        if kept != result.root:  # laid down elsewhere: nothing left to lay lazily
            result.root, result.ensure_root = kept, None
    run.scopes[index] = builder.state.vars
    run.results[index] = result


def open_layer_cache(options: BuildOptions, registry: RegistryOptions, platform: Platform):
    if not options.cache:
        return None
    repo = options.cache_repo
    if not repo:
        if not options.destinations or options.no_push:
            # Kaniko (root.go cacheFlagsValid) refuses --cache with --no-push and no --cache-repo
            log.warning("--cache needs --cache-repo (or a --destination that is pushed); "
                        "building without the layer cache")
            return None
        first = parse_reference(options.destinations[0])
        repo = f"{first.registry}/{first.repository}/cache"
    from pybuildless.cache.store import open_cache
    from pybuildless.dockerfile.mounts import parse_go_duration

    try:
        ttl = parse_go_duration(options.cache_ttl) / 1e9
    except ValueError:
        raise UsageError(f"--cache-ttl {options.cache_ttl!r}: expected a duration such as 336h") from None
    if not repo.startswith("oci:"):  # its registry's first token then covers it too (registry.ahead)
        ahead.expect(registry, [(parse_reference(repo), "pull" if options.no_push_cache else "push,pull")])
    return open_cache(repo, registry, ttl=ttl, platform=platform, push=not options.no_push_cache)


def _is_docker(result: StageResult) -> bool:
    return mt.is_docker(json.loads(result.image.raw_manifest()).get("mediaType", ""))

