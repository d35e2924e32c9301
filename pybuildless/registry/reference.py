"""Compatibility alias: references moved to the leaf package ``pybuildless.name``.

Kept while modules outside the registry still import this path; new code imports ``pybuildless.name``.
"""

from pybuildless.name.reference import (  # noqa: F401
    DEFAULT_TAG,
    DOCKER_HUB,
    DOCKER_HUB_API,
    NAME_TOTAL_LENGTH_MAX,
    Reference,
    normalise_registry,
    parse_reference,
    parse_repository,
)
