"""Registry client (OCI distribution-spec / Docker registry v2).

Entry points:

- ``parse_reference(text)`` → ``Reference``
- ``fetch_image(ref, platform=, options=)`` → ``RemoteImage`` (lazy, layers stream verified)
- ``pull_image(ref, dest, platform=, options=, jobs=)`` → image of ``FileLayer``s on disk
- ``push_image(image, refs, options=)`` / ``push_index(images, refs, options=)`` → ``Digest``
- ``image_exists(ref, options=)`` → manifest ``Descriptor`` or None
- ``RegistryOptions`` (flags), ``default_keychain()`` (Docker config.json + helpers)
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module defining it. Loaded on first use (PEP 562), so importing one submodule
# (``registry.options`` for the command line's flags) does not load the HTTP stack with it.
_EXPORTS = {
    "Credential": "credentials",
    "Keychain": "credentials",
    "default_keychain": "credentials",
    "RegistryOptions": "options",
    "PulledLayer": "remote",
    "RemoteImage": "remote",
    "RemoteLayer": "remote",
    "fetch_image": "remote",
    "image_exists": "remote",
    "pull_image": "remote",
    "make_index": "push",
    "push_image": "push",
    "push_index": "push",
}
_NAMES = {"Reference", "parse_reference", "parse_repository"}  # from pybuildless.name


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module("pybuildless.name"), name)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"pybuildless.registry.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Credential",
    "Keychain",
    "PulledLayer",
    "Reference",
    "RegistryOptions",
    "RemoteImage",
    "RemoteLayer",
    "default_keychain",
    "fetch_image",
    "image_exists",
    "make_index",
    "parse_reference",
    "parse_repository",
    "pull_image",
    "push_image",
    "push_index",
]
