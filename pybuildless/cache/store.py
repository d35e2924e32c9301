"""Where cached steps live: a registry repository (``<repo>:<key>``) or a local OCI layout.

Each entry is an image with zero layers (the step changed nothing) or one
layer, and a config whose ``created`` is checked against ``--cache-ttl``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pybuildless.errors import NotFoundError, PybuildlessError
from pybuildless.image.descriptor import Platform
from pybuildless.image.model import Image, Layer, build_image
from pybuildless.image.times import rfc3339
from pybuildless.name import Reference, parse_reference
from pybuildless.registry.options import RegistryOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedStep:
    """A step found in the layer cache: its layer (None: no change) and history."""

    layer: Layer | None  # None: the step changed nothing
    created_by: str
    created: str | None = None  # when the step first ran: its history time on every hit


class LayerCache(Protocol):
    def get(self, key: str) -> CachedStep | None: ...
    def put(self, key: str, layer: Layer | None, created_by: str, created: str | None = None) -> None: ...


def _entry_image(layer: Layer | None, created_by: str, platform: Platform, created: str | None = None) -> Image:
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created or rfc3339(int(time.time())),  # whole seconds
        "config": {"Labels": {"org.pybuildless.cache": "1"}},
        "history": [{"created_by": created_by, **({} if layer else {"empty_layer": True})}],
    }
    return build_image(config, [layer] if layer else [])


def _read_entry(image: Image, ttl: float, what: str) -> CachedStep | None:
    config = json.loads(image.raw_config())
    if (config.get("config") or {}).get("Labels", {}).get("org.pybuildless.cache") != "1":
        return None
    created = config.get("created", "")
    try:
        age = time.time() - datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    if age > ttl:
        log.info("cache entry %s expired (%.0fs old)", what, age)
        return None
    layers = list(image.layers())
    history = config.get("history") or [{}]
    if len(layers) > 1:
        return None
    return CachedStep(layers[0] if layers else None, history[0].get("created_by", ""), created)


class RegistryLayerCache:
    def __init__(self, repository: str, options: RegistryOptions, *, ttl: float, platform: Platform,
                 push: bool = True) -> None:
        ref = parse_reference(repository)
        self.repo: Reference = ref
        self.options = options
        self.ttl = ttl
        self.platform = platform
        self.push = push

    def _ref(self, key: str) -> Reference:
        return parse_reference(f"{self.repo.registry}/{self.repo.repository}:{key[:128]}")

    def get(self, key: str) -> CachedStep | None:
        from pybuildless.registry.remote import fetch_image

        try:
            # the cache repo is read with the push side's flags, as Kaniko's pkg/cache/cache.go does
            image = fetch_image(self._ref(key), platform=self.platform, options=self.options, pull=False)
        except NotFoundError:
            return None
        except PybuildlessError as e:
            log.warning("cache look-up of %s failed: %s", key[:12], e)
            return None
        return _read_entry(image, self.ttl, key[:12])

    def put(self, key: str, layer: Layer | None, created_by: str, created: str | None = None) -> None:
        if not self.push:
            return
        from pybuildless.registry.remote import push_image

        push_image(_entry_image(layer, created_by, self.platform, created), [self._ref(key)], options=self.options)


class LayoutLayerCache:
    """``--cache-repo oci:/path``: entries tagged by key in one OCI layout."""

    def __init__(self, path: Path, *, ttl: float, platform: Platform, push: bool = True) -> None:
        self.path = path
        self.ttl = ttl
        self.platform = platform
        self.push = push

    def get(self, key: str) -> CachedStep | None:
        from pybuildless.image.layout import layout_tags, read_layout

        if not (self.path / "index.json").exists() or key not in layout_tags(self.path):
            return None
        try:
            image = read_layout(self.path, key, platform=self.platform)
        except PybuildlessError as e:
            log.warning("cache entry %s unreadable: %s", key[:12], e)
            return None
        return _read_entry(image, self.ttl, key[:12])

    def put(self, key: str, layer: Layer | None, created_by: str, created: str | None = None) -> None:
        if not self.push:
            return
        from pybuildless.image.layout import write_layout

        write_layout(self.path, _entry_image(layer, created_by, self.platform, created), tag=key)


def open_cache(spec: str, options: RegistryOptions, *, ttl: float, platform: Platform, push: bool) -> LayerCache:
    if spec.startswith("oci:"):
        return LayoutLayerCache(Path(spec[4:]), ttl=ttl, platform=platform, push=push)
    return RegistryLayerCache(spec, options, ttl=ttl, platform=platform, push=push)
