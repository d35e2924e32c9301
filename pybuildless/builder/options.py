"""BuildOptions: every executor flag as one frozen value; click maps onto it 1:1 (cli/build.py).

Grouped as the README's flag table is: inputs, outputs, layers, filesystem, cache, registry.
The registry flags are one ``RegistryOptions`` (the registry client's own value), built once by
the command line. Flags that change nothing here (``--snapshot-mode``, ``--cache-copy-layers``,
``--use-new-run``, ...) are not fields: the command line says why when one is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pybuildless.registry.options import RegistryOptions

INPLACE = "inplace"  # --isolation value of Kaniko's mode: the stage root is the container's own /


@dataclass(frozen=True)
class GitOptions:
    """--git for a git:// context (Kaniko's KanikoGitOptions)."""
    branch: str = ""
    single_branch: bool = False
    recurse_submodules: bool = False
    insecure_skip_tls: bool = False


@dataclass(frozen=True)
class BuildOptions:
    # -- inputs: what is built ------------------------------------------------------------
    """Everything a build was asked for, from the command line or a caller."""

    context: str = "/workspace/"
    context_sub_path: str = ""
    git: GitOptions = GitOptions()
    dockerfile: str = "Dockerfile"
    build_args: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    custom_platform: str | None = None
    secrets: tuple[tuple[str, str, str], ...] = ()  # (id, "src"|"env", path or variable name)

    # -- outputs: where the image goes ----------------------------------------------------
    destinations: tuple[str, ...] = ()
    no_push: bool = False
    tar_path: Path | None = None
    oci_layout_path: Path | None = None
    digest_file: Path | None = None
    image_name_with_digest_file: Path | None = None
    image_name_tag_with_digest_file: Path | None = None
    push_retry: int = 0
    push_ignore_immutable_tag_errors: bool = False
    skip_push_permission_check: bool = False

    # -- layers ----------------------------------------------------------------------------
    single_snapshot: bool = False
    reproducible: bool = False
    source_date_epoch: int | None = None
    compression: str = "gzip"
    compression_level: int | None = None
    force_build_metadata: bool = False  # every step adds a layer, even an empty one

    # -- filesystem: stage roots and how RUN executes ----------------------------------
    isolation: str = "auto"
    ignore_paths: tuple[str, ...] = ()
    ignore_var_run: bool = True
    cleanup: bool = False
    force: bool = False
    kaniko_dir: Path = Path("/kaniko")
    work_dir: Path | None = None
    overlay_snapshots: bool = True  # RUN on an overlay; the diff read from its upper dir
    layer_store: bool = True  # stage roots from the local store of unpacked layers (builder.storeroot)
    layer_store_max_size: int | None = 10 << 30  # least recently used layers beyond this go after a build
    jobs: int = 4  # independent stages built at once (bounded by the cores)
    image_fs_extract_retry: int = 0

    # -- cache -----------------------------------------------------------------------------
    cache: bool = False
    cache_repo: str | None = None
    cache_dir: Path | None = None
    cache_ttl: str = "336h"
    cache_run_layers: bool = True  # False: RUN layers are neither looked up nor stored (Kaniko's flag)
    no_push_cache: bool = False

    # -- registry: TLS, plain HTTP, mirrors, certificates, retries ------------------------
    registry: RegistryOptions = RegistryOptions()

    @property
    def in_place(self) -> bool:
        """Kaniko's mode: the build runs in the container's own root filesystem."""
        return self.isolation == INPLACE

    def caches_layers_of(self, keyword: str) -> bool:
        """Whether the layer cache is asked for (and given) this instruction's layer: RUN
        layers follow --cache-run-layers; COPY and ADD layers always are, their keys hashing
        the copied content (Kaniko v1.24.0 pkg/executor/build.go: a command whose
        ShouldCacheOutput() is false is neither retrieved nor pushed)."""
        return self.cache_run_layers or keyword != "RUN"
