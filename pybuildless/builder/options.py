"""BuildOptions: every executor flag as one frozen value; click maps onto it 1:1."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class GitOptions:
    """--git for a git:// context (Kaniko's KanikoGitOptions)."""
    branch: str = ""
    single_branch: bool = False
    recurse_submodules: bool = False
    insecure_skip_tls: bool = False


@dataclass(frozen=True)
class BuildOptions:
    context: str = "/workspace/"
    context_sub_path: str = ""
    git: GitOptions = GitOptions()
    dockerfile: str = "Dockerfile"
    destinations: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    no_push: bool = False
    tar_path: Path | None = None
    oci_layout_path: Path | None = None
    digest_file: Path | None = None
    image_name_with_digest_file: Path | None = None
    image_name_tag_with_digest_file: Path | None = None
    labels: tuple[tuple[str, str], ...] = ()
    custom_platform: str | None = None
    single_snapshot: bool = False
    snapshot_mode: str = "full"
    reproducible: bool = False
    source_date_epoch: int | None = None
    ignore_paths: tuple[str, ...] = ()
    ignore_var_run: bool = True
    cleanup: bool = False
    isolation: str = "auto"
    overlay_snapshots: bool = True  # RUN on an overlay; the diff read from its upper dir
    layer_store: bool = True  # stage roots from the local store of unpacked layers (builder.storeroot)
    layer_store_max_size: int | None = 10 << 30  # least recently used layers beyond this go after a build
    jobs: int = 4  # independent stages built at once (bounded by the cores)
    force: bool = False
    kaniko_dir: Path = Path("/kaniko")
    work_dir: Path | None = None
    compression: str = "gzip"
    compression_level: int | None = None
    # cache flags are accepted now; the layer cache itself lands separately
    cache: bool = False
    cache_repo: str | None = None
    cache_dir: Path | None = None
    cache_ttl: str = "336h"
    cache_run_layers: bool = True
    cache_copy_layers: bool = False
    no_push_cache: bool = False
    # registry
    insecure: bool = False
    insecure_pull: bool = False
    insecure_registries: tuple[str, ...] = ()
    skip_tls_verify: bool = False
    skip_tls_verify_pull: bool = False
    skip_tls_verify_registries: tuple[str, ...] = ()
    registry_certificates: tuple[tuple[str, str], ...] = ()
    registry_client_certs: tuple[tuple[str, str, str], ...] = ()  # (host, cert, key) for mutual TLS
    registry_mirrors: tuple[str, ...] = ()
    registry_map: tuple[tuple[str, str], ...] = ()
    skip_default_registry_fallback: bool = False
    secrets: tuple[tuple[str, str, str], ...] = ()  # (id, "src"|"env", path or variable name)
    push_retry: int = 0
    push_ignore_immutable_tag_errors: bool = False
    skip_push_permission_check: bool = False
    image_download_retry: int = 0
    image_fs_extract_retry: int = 0
    force_build_metadata: bool = False  # every step adds a layer, even an empty one
    # inputs from outside the Dockerfile that are not flags
    stdin_context: bool = field(default=False, compare=False)

    @property
    def build_arg_dict(self) -> dict[str, str]:
        return dict(self.build_args)
