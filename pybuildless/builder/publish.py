"""Where the built image goes: registries, a `docker load` tarball, an OCI layout, digest files.

Kaniko's rules: the digest everywhere is the manifest digest; the tarball is
tagged with the destinations (``unset-repo/unset-image-name`` without any).
With no destination, no ``--no-push`` and no output flag at all (where Kaniko
refuses to start), the image is written to a local OCI layout and the path is
printed; ``--no-push`` alone writes nothing, as in Kaniko.

Before anything is built, every destination is asked for push access the way
Kaniko (go-containerregistry's CheckPushPermission) does it: start a blob upload
with a push token, then cancel it. A long build then cannot fail only at the push.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from pybuildless.builder.options import BuildOptions
from pybuildless.builder.progress import Progress
from pybuildless.errors import PybuildlessError, RegistryError
from pybuildless.image import outputs
from pybuildless.image.descriptor import Digest
from pybuildless.image.descriptor import Platform
from pybuildless.image.model import Image, image_config, image_digest
from pybuildless.name import parse_reference
from pybuildless.registry import ahead, jobs
from pybuildless.registry.options import RegistryOptions

DEFAULT_LAYOUT = "pybuildless-image"
UNSET_TAG = "unset-repo/unset-image-name:latest"


# Kaniko v1.24.0 pkg/executor/push.go errTagImmutable: what registries say when a tag cannot move.
IMMUTABLE_TAG_ERRORS = (
    "The repository has enabled tag immutability",  # Google Artifact Registry
    "cannot be overwritten because the repository is immutable",  # Amazon ECR
)


def push_targets(options: BuildOptions) -> list[str]:
    """What Kaniko's CheckPushPermissions checks: the destinations, or the cache repo under --no-push."""
    if options.skip_push_permission_check or (options.no_push and options.no_push_cache):
        return []
    if options.no_push:
        repo = options.cache_repo
        return [repo] if repo and not repo.startswith("oci:") else []
    return list(options.destinations)


def check_push_permissions(options: BuildOptions, registry: RegistryOptions) -> None:
    """Each destination's upload is kept open for the push to put the config in (registry.ahead);
    only the cache repository's (checked under --no-push) is cancelled, off the critical path."""
    checked: set[str] = set()
    pushing = bool(options.destinations) and not options.no_push
    started = ahead.begin(registry, [parse_reference(d) for d in options.destinations] if pushing else [])
    for target in push_targets(options):
        ref = parse_reference(target)
        if ref.context in checked:
            continue
        from pybuildless.registry.client import RegistryClient  # the HTTP stack, when a registry is reached

        client = RegistryClient.for_reference(ref, registry)
        scopes = (ref.scope("push,pull"),)
        try:
            location = client.start_upload(ref.repository, scopes=scopes)
        except RegistryError as e:
            raise RegistryError(f"checking push permission for {target}: {e} (make sure the destination is right "
                                "and the credentials allow a push; --skip-push-permission-check skips this "
                                "check)") from None
        if pushing and target in options.destinations:
            started.park(ref, location)
        else:  # the upload only proved access: don't leave it open, and don't wait for the DELETE
            jobs.submit(client._cancel, location, scopes)
        checked.add(ref.context)


def _is_immutable_tag_error(error: Exception) -> bool:
    return any(text in str(error) for text in IMMUTABLE_TAG_ERRORS)


def _push_all(image: Image, options: BuildOptions, registry: RegistryOptions, progress: Progress) -> None:
    from pybuildless.registry.remote import push_image

    if not options.push_ignore_immutable_tag_errors:
        push_image(image, list(options.destinations), options=registry)
        return
    for dest in options.destinations:  # one at a time, so one immutable tag does not stop the others
        try:
            push_image(image, [dest], options=registry)
        except PybuildlessError as e:
            if not _is_immutable_tag_error(e):
                raise
            progress.info(f"immutable tag error ignored for {dest}@{image_digest(image)}")


def _push_with_retry(image: Image, options: BuildOptions, registry: RegistryOptions, progress: Progress) -> None:
    attempts = options.push_retry + 1
    for attempt in range(1, attempts + 1):
        try:
            _push_all(image, options, registry, progress)
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
        try:
            _push_with_retry(image, options, registry, progress)
        finally:
            ahead.end(registry)
        for dest in options.destinations:
            progress.info(f"pushed {dest}@{digest}")
    if options.tar_path:
        from pybuildless.image.tarball import write_tarball

        write_tarball(options.tar_path, image, list(options.destinations) or [UNSET_TAG])
        progress.info(f"wrote tarball {options.tar_path}")
        wrote_output = True
    if options.oci_layout_path:
        from pybuildless.image.layout import write_layout

        write_layout(options.oci_layout_path, image, tag="latest")
        progress.info(f"wrote OCI layout {options.oci_layout_path}")
        wrote_output = True
    if options.no_push and not wrote_output:
        progress.info("--no-push and no --tar-path or --oci-layout-path: the image is not written anywhere")
    elif not pushing and not wrote_output:
        from pybuildless.image.layout import write_layout

        path = Path(os.getcwd()) / DEFAULT_LAYOUT
        write_layout(path, image, tag="latest")
        progress.info(f"no destination given: image written to the OCI layout {path} (tag latest)")
    _write_digest_files(options, digest, pushing)
    return digest


def _write_digest_files(options: BuildOptions, digest: Digest, pushing: bool) -> None:
    if options.digest_file:
        outputs.write_digest_file(options.digest_file, digest)
    if options.image_name_with_digest_file:
        outputs.write_image_name_with_digest_file(options.image_name_with_digest_file, options.destinations, digest)
    if options.image_name_tag_with_digest_file:
        outputs.write_image_name_tag_with_digest_file(options.image_name_tag_with_digest_file,
                                                      options.destinations, digest)
    if os.environ.get("BUILDER_OUTPUT") and pushing:
        outputs.write_builder_output(os.environ["BUILDER_OUTPUT"], options.destinations, digest)


def _host_image(images: Sequence[Image]) -> int:
    """Which image ``docker load`` gets the tags on: the host's platform, else the first."""
    host = Platform.host()
    for n, image in enumerate(images):
        config = image_config(image)
        if (config.get("os"), config.get("architecture")) == (host.os, host.architecture):
            return n
    return 0


def publish_index(images: Sequence[Image], options: BuildOptions, registry: RegistryOptions,
                  progress: Progress) -> Digest:
    """Several platform images: each pushed by digest, then one index (a Docker manifest list
    when every image is a Docker v2 manifest, else an OCI index) under every destination. The
    digest files name the index; the tarball and the OCI layout hold it too."""
    from pybuildless.image.layout import write_index_to_layout
    from pybuildless.image.tarball import write_tarball_multi
    from pybuildless.registry.remote import make_index, push_index

    raw_index, _ = make_index(images)
    digest = Digest.of_bytes(raw_index)
    pushing = bool(options.destinations) and not options.no_push
    wrote_output = False
    if pushing:
        attempts = options.push_retry + 1
        for attempt in range(1, attempts + 1):
            try:
                push_index(images, list(options.destinations), options=registry, raw_index=raw_index)
                ahead.end(registry)
                break
            except PybuildlessError as e:
                if options.push_ignore_immutable_tag_errors and _is_immutable_tag_error(e):
                    progress.info(f"immutable tag error ignored for the index {digest}")
                    break
                if attempt == attempts:
                    raise
                progress.warn(f"push failed ({e}); retry {attempt}/{options.push_retry}")
                time.sleep(2 ** (attempt - 1))
        for dest in options.destinations:
            progress.info(f"pushed {dest}@{digest} (index of {len(images)} platforms)")
    if options.tar_path:
        # docker load reads manifest.json only: every platform's image, tagged on the host's one.
        tags = list(options.destinations) or [UNSET_TAG]
        host = _host_image(images)
        entries = [(image, tags if n == host else []) for n, image in enumerate(images)]
        write_tarball_multi(options.tar_path, entries, index=(raw_index, tags))
        progress.info(f"wrote tarball {options.tar_path} (an image index; docker load takes each platform's image)")
        wrote_output = True
    layout = options.oci_layout_path
    if layout is None and not pushing and not options.no_push and not wrote_output:
        layout = Path(os.getcwd()) / DEFAULT_LAYOUT
    if layout is not None:
        write_index_to_layout(layout, images, tag="latest", raw_index=raw_index)
        progress.info(f"wrote the image index to the OCI layout {layout} (tag latest)")
    _write_digest_files(options, digest, pushing)
    return digest
