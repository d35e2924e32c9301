"""Shared pytest configuration. Fixtures live in plugin modules, one per area."""

pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.images",
    "tests.fixtures.dockerd",
]
