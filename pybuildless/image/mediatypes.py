"""Media types of the OCI image spec and Docker's schema 2."""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
# Sent on every manifest GET and HEAD (the same list for both, or some
# registries answer HEAD with a different digest than GET).
MANIFEST_ACCEPT = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)


def is_index(media_type: str) -> bool:
    return media_type in INDEXES


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFESTS


def is_docker(media_type: str) -> bool:
    """A Docker schema 2 type (manifest, list, config or layer) rather than an OCI one."""
    return media_type.startswith("application/vnd.docker.")


# Docker's schema 2 spells the plain and gzip layer types its own way; it has no zstd type, so a
# Docker manifest cannot hold a zstd layer (registries and engines reject the mix).
_DOCKER_LAYER_TYPES = {OCI_LAYER: DOCKER_LAYER, OCI_LAYER_GZIP: DOCKER_LAYER_GZIP}
_OCI_LAYER_TYPES = {docker: oci for oci, docker in _DOCKER_LAYER_TYPES.items()}


def docker_layer_type(media_type: str) -> str:
    """The type a layer has in a Docker manifest: Docker's spelling of an OCI plain or gzip layer."""
    return _DOCKER_LAYER_TYPES.get(media_type, media_type)


def oci_layer_type(media_type: str) -> str:
    """The type a layer has in an OCI manifest: OCI's spelling of a Docker plain or gzip layer."""
    return _OCI_LAYER_TYPES.get(media_type, media_type)


def fits_docker_manifest(layer_media_type: str) -> bool:
    return layer_compression(layer_media_type) != "zstd"


def layer_compression(media_type: str) -> str:
    """'gzip', 'zstd' or 'none' for a layer media type."""
    if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
        return "zstd"
    if media_type.endswith("gzip"):
        return "gzip"
    return "none"
