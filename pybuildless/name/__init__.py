"""Image names: references parsed and normalised as Docker does (go-containerregistry's ``pkg/name``).

A leaf package: it imports nothing from pybuildless but ``errors``, so the image formats, the
registry client, the cache and the build can all name images without importing each other.
"""

from pybuildless.name.reference import (
    DEFAULT_TAG,
    DOCKER_HUB,
    DOCKER_HUB_API,
    Reference,
    normalise_registry,
    parse_reference,
    parse_repository,
)

__all__ = [
    "DEFAULT_TAG", "DOCKER_HUB", "DOCKER_HUB_API", "Reference", "normalise_registry", "parse_reference",
    "parse_repository",
]
