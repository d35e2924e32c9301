"""Several target platforms in one build: one image each, stages shared where nothing differs.

Every platform is planned (and its foreign RUN steps checked) before any of them
starts, so a build that cannot finish for one platform fails at once for all.
The platforms are then built side by side within ``--jobs`` (in turn in place,
where / is the one stage root), each in its own work directory with its own
cache keys (they chain from the base's manifest digest, which is per platform).

A stage is built once for all targets when its inputs are the same for them, as
BuildKit solves an identical LLB graph once: the usual cross-compiling pattern
``FROM --platform=$BUILDPLATFORM golang AS build`` + ``COPY --from=build`` runs the
build stage a single time. A stage's identity is what can make it differ between
targets: its own platform, its base (an image name or another stage's identity),
the values of the ARGs it declares (``ARG TARGETARCH`` makes it per target), the
stages it copies from, and the target itself for the final stage and for stages
that read from images (``COPY --from=<image>`` is resolved for the target).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pybuildless.builder.options import BuildOptions
from pybuildless.builder.progress import BufferedProgress, Progress
from pybuildless.dockerfile import instructions as ins
from pybuildless.dockerfile.parser import Dockerfile
from pybuildless.dockerfile.stages import BuildPlan, stage_dependencies
from pybuildless.image.descriptor import Platform


def stage_identity(dockerfile: Dockerfile, plan: BuildPlan, arg_values: dict[str, Any],
                   platforms: dict[int, Platform], target: Platform, index: int, known: dict[int, str]) -> str:
    """A text equal for two targets exactly when the stage is built the same way for both."""
    stage = dockerfile.stages[index]
    base = plan.bases[index]
    needed, images = stage_dependencies(dockerfile, stage, base)
    declared = sorted({key for inst in stage.instructions if isinstance(inst, ins.Arg) for key, _ in inst.pairs})
    parts: list[Any] = [index, str(platforms[index]), base.image, known.get(base.stage) if base.stage is not None
                        else None, [(key, arg_values.get(key)) for key in declared],
                        [known.get(dep) for dep in sorted(needed)]]
    from_images = images - {base.image}  # the base itself is resolved for the stage's own platform
    if from_images or index == plan.target or any(dep not in known for dep in needed):
        parts.append(("target", str(target)))
    return repr(parts)


class SharedStages:
    """Stage results by identity; the first platform to ask builds, the others wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[str, Future] = {}
        self._owners: dict[str, Platform] = {}

    def build_once(self, identity: str, platform: Platform, build: Callable[[], Any]) -> tuple[Any, Platform | None]:
        """``build()``'s value, built here or by another platform (then also its platform)."""
        with self._lock:
            future = self._futures.get(identity)
            owner = future is None
            if owner:
                future = self._futures[identity] = Future()
                self._owners[identity] = platform
        if owner:
            try:
                value = build()
            except BaseException as e:
                future.set_exception(e)
                raise
            future.set_result(value)
            return value, None
        return future.result(), self._owners[identity]


def cache_for_platform(cache: Any, platform: Platform) -> Any:
    """The layer cache with its entries labelled (and looked up) as ``platform``'s: the platform of
    the stage a step belongs to, not the build's target. A ``FROM --platform=$BUILDPLATFORM``
    stage's steps ran natively, and a stage shared by several targets has the same keys for all of
    them: labelled with whichever target built it first, its entries would claim another
    architecture, and every other target's look-up would warn that they do."""
    if cache is None or getattr(cache, "platform", platform) == platform:
        return cache
    labelled = copy.copy(cache)  # the same store, only the label differs
    labelled.platform = platform
    return labelled


def platform_jobs(options: BuildOptions, count: int) -> tuple[int, int]:
    """(platforms at once, stages at once within a platform), both within --jobs and the cores."""
    jobs = max(1, min(os.cpu_count() or 1, options.jobs))
    at_once = max(1, min(jobs, count))
    return at_once, max(1, jobs // at_once)


def build_platforms(options: BuildOptions, work: Path, platforms: Sequence[Platform], progress: Progress,
                    prepare: Callable[[Platform], Any], execute: Callable[..., Any]) -> list[Any]:
    """``execute(prepared, options, work, progress, shared)`` for every platform, in parallel
    (in turn in place); results in the order of ``platforms``. ``prepare`` plans (and checks) one platform."""
    prepared = [prepare(p) for p in platforms]  # every platform checked before anything is built
    at_once, inner = platform_jobs(options, len(platforms))
    if options.isolation == "inplace":
        # One root (/): the platforms take turns on it, as the stages of one platform do; a stage
        # another platform reuses was kept aside (materialised) because later stages need it.
        at_once = 1
    inner_options = dataclasses.replace(options, jobs=inner)
    shared = SharedStages()
    if at_once == 1:  # one after another: the output can stream as it comes
        results = []
        for n, (platform, prep) in enumerate(zip(platforms, prepared)):
            progress.info(f"--- platform {platform} ---")
            results.append(execute(prep, inner_options, work / f"platform-{n}", progress, shared))
        return results
    buffers = [BufferedProgress() for _ in platforms]
    with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="platform") as pool:
        futures = [pool.submit(execute, prep, inner_options, work / f"platform-{n}", buffers[n], shared)
                   for n, prep in enumerate(prepared)]
        for future in futures:
            future.exception()  # wait for all: a failed platform leaves the others' output intact
    for platform, buffer in zip(platforms, buffers):
        progress.info(f"--- platform {platform} ---")
        buffer.replay(progress)
    return [future.result() for future in futures]  # the first failure in platform order wins
