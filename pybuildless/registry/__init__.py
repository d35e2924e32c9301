"""Registry client (OCI distribution-spec / Docker registry v2).

Entry points:

- ``parse_reference(text)`` → ``Reference``
- ``fetch_image(ref, platform=, options=)`` → ``RemoteImage`` (lazy, layers stream verified)
- ``pull_image(ref, dest, platform=, options=, jobs=)`` → image of ``FileLayer``s on disk
- ``push_image(image, refs, options=)`` / ``push_index(images, refs, options=)`` → ``Digest``
- ``image_exists(ref, options=)`` → manifest ``Descriptor`` or None
- ``RegistryOptions`` (flags), ``default_keychain()`` (Docker config.json + helpers)
"""

from pybuildless.registry.credentials import Credential, Keychain, default_keychain
from pybuildless.registry.options import RegistryOptions
from pybuildless.name import Reference, parse_reference, parse_repository
from pybuildless.registry.remote import (
    PulledLayer,
    RemoteImage,
    RemoteLayer,
    fetch_image,
    image_exists,
    make_index,
    pull_image,
    push_image,
    push_index,
)

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
