"""Where the built image goes: registries, a `docker load` tarball, an OCI layout, digest files.

Kaniko's rules: the digest everywhere is the manifest digest; the tarball is
tagged with the destinations (``unset-repo/unset-image-name`` without any);
with no destination and no output flag at all, the image is written to a local
OCI layout and the path is printed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pybuildless.build.options import BuildOptions
from pybuildless.build.progress import Progress
from pybuildless.errors import PybuildlessError
from pybuildless.image import outputs
from pybuildless.image.descriptor import Digest
from pybuildless.image.layout import write_layout
from pybuildless.image.model import Image, image_digest
from pybuildless.image.tarball import write_tarball
from pybuildless.registry.options import RegistryOptions
from pybuildless.registry.remote import push_image

DEFAULT_LAYOUT = "pybuildless-image"
UNSET_TAG = "unset-repo/unset-image-name:latest"


def _push_with_retry(image: Image, options: BuildOptions, registry: RegistryOptions, progress: Progress) -> None:
    attempts = options.push_retry + 1
    for attempt in range(1, attempts + 1):
        try:
            push_image(image, list(options.destinations), options=registry)
            return
        except PybuildlessError as e:
            if attempt == attempts:
                raise
            delay = 2 ** (attempt - 1)
            progress.warn(f"push failed ({e}); retry {attempt}/{options.push_retry} in {delay}s")
            time.sleep(delay)


def publish(image: Image, options: BuildOptions, registry: RegistryOptions, progress: Progress) -> Digest:
    digest = image_digest(image)
    pushing = bool(options.destinations) and not options.no_push
    wrote_output = False
    if pushing:
        _push_with_retry(image, options, registry, progress)
        for dest in options.destinations:
            progress.info(f"pushed {dest}@{digest}")
    if options.tar_path:
        write_tarball(options.tar_path, image, list(options.destinations) or [UNSET_TAG])
        progress.info(f"wrote tarball {options.tar_path}")
        wrote_output = True
    if options.oci_layout_path:
        write_layout(options.oci_layout_path, image, tag="latest")
        progress.info(f"wrote OCI layout {options.oci_layout_path}")
        wrote_output = True
    if not pushing and not wrote_output:
        path = Path(os.getcwd()) / DEFAULT_LAYOUT
        write_layout(path, image, tag="latest")
        progress.info(f"no destination given: image written to the OCI layout {path} (tag latest)")
    if options.digest_file:
        outputs.write_digest_file(options.digest_file, digest)
    if options.image_name_with_digest_file:
        outputs.write_image_name_with_digest_file(options.image_name_with_digest_file, options.destinations, digest)
    if options.image_name_tag_with_digest_file:
        outputs.write_image_name_tag_with_digest_file(options.image_name_tag_with_digest_file,
                                                      options.destinations, digest)
    if os.environ.get("BUILDER_OUTPUT") and pushing:
        outputs.write_builder_output(os.environ["BUILDER_OUTPUT"], options.destinations, digest)
    return digest
