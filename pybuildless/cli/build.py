"""`pybuildless build` / `executor`: Kaniko's executor flags, mapped onto BuildOptions."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pybuildless.build.options import BuildOptions
from pybuildless.errors import UsageError

VERBOSITIES = ("panic", "fatal", "error", "warn", "info", "debug", "trace")


def _pairs(values: tuple[str, ...], flag: str, sep: str = "=") -> tuple[tuple[str, str], ...]:
    out = []
    for v in values:
        key, found, value = v.partition(sep)
        if not found or not key:
            raise UsageError(f"{flag} {v!r}: expected KEY{sep}VALUE")
        out.append((key, value))
    return tuple(out)


def _build_args(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for v in values:
        key, found, value = v.partition("=")
        if not key:
            raise UsageError(f"--build-arg {v!r}: expected KEY=VALUE or KEY")
        if not found:
            # Docker's rule: a bare KEY takes its value from the environment, and
            # is left unset when the environment has none.
            if key not in os.environ:
                continue
            value = os.environ[key]
        out.append((key, value))
    return tuple(out)


def _registry_map(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # Kaniko accepts "orig=remap;orig2=remap2" in one value, and the flag repeated.
    items = [part for v in values for part in v.split(";") if part]
    return _pairs(tuple(items), "--registry-map")


def _secrets(values: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    out = []
    for v in values:
        fields = dict(part.partition("=")[::2] for part in v.split(","))
        ident = fields.pop("id", "")
        kinds = [k for k in ("src", "source", "env") if fields.get(k)]
        if not ident or len(kinds) != 1 or set(fields) - {"src", "source", "env", "type"}:
            raise UsageError(f"--secret {v!r}: expected id=ID,src=PATH or id=ID,env=VAR")
        kind = "env" if kinds[0] == "env" else "src"
        out.append((ident, kind, fields[kinds[0]]))
    return tuple(out)


def _sde(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--source-date-epoch / SOURCE_DATE_EPOCH {value!r}: expected seconds since 1970") from None


def _default_isolation() -> str:
    return os.environ.get("PYBUILDLESS_ISOLATION", "auto")


P = click.Path(path_type=Path)


@click.command("build", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--context", default="/workspace/", show_default=True,
              help="Build context: a directory, dir://PATH, tar://PATH or tar://stdin.")
@click.option("-f", "--dockerfile", default="Dockerfile", show_default=True, help="Path to the Dockerfile ('-' for stdin).")
@click.option("-d", "--destination", multiple=True, help="Image reference to push to (repeatable).")
@click.option("--build-arg", multiple=True, help="KEY=VALUE, or KEY to take the value from the environment.")
@click.option("--target", help="Stage to build.")
@click.option("--no-push", is_flag=True, envvar="KANIKO_NO_PUSH", help="Build without pushing.")
@click.option("--tar-path", type=P, help="Also write a `docker load` tarball here.")
@click.option("--oci-layout-path", type=P, help="Also write an OCI image layout here.")
@click.option("--digest-file", type=P, help="Write the image digest to this file.")
@click.option("--image-name-with-digest-file", type=P, help="Write REPO@DIGEST lines here.")
@click.option("--image-name-tag-with-digest-file", type=P, help="Write REPO:TAG@DIGEST lines here.")
@click.option("--label", multiple=True, help="KEY=VALUE label added to the image (repeatable).")
@click.option("--custom-platform", "--customPlatform", "custom_platform", help="os/arch[/variant] of the image.")
@click.option("--single-snapshot", is_flag=True, help="One layer for the whole final stage.")
@click.option("--snapshot-mode", "--snapshotMode", "snapshot_mode", type=click.Choice(["full", "redo", "time"]),
              default="full", show_default=True, help="Accepted for Kaniko compatibility; snapshots are stat-based with ctime.")
@click.option("--reproducible", is_flag=True, help="Zero timestamps in layers, config and history.")
@click.option("--source-date-epoch", envvar="SOURCE_DATE_EPOCH", help="Clamp timestamps to this time (seconds).")
@click.option("--ignore-path", multiple=True, help="Path never extracted, snapshotted or deleted (repeatable).")
@click.option("--ignore-var-run/--no-ignore-var-run", "--whitelist-var-run", default=True, show_default=True)
@click.option("--cleanup", is_flag=True, help="Remove the built filesystem at the end.")
@click.option("--isolation", type=click.Choice(["auto", "chroot", "inplace", "userns"]), default=_default_isolation,
              show_default="auto, or $PYBUILDLESS_ISOLATION", help="How RUN steps execute.")
@click.option("--overlay-snapshots/--no-overlay-snapshots", default=True, show_default=True,
              envvar="PYBUILDLESS_OVERLAY_SNAPSHOTS",
              help="Run RUN steps on an overlay and read their changes from its upper dir, where mounts allow.")
@click.option("--jobs", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Independent stages built in parallel (at most the number of cores).")
@click.option("--force", is_flag=True, help="Build in place even where no container is detected.")
@click.option("--kaniko-dir", type=P, envvar="KANIKO_DIR", default="/kaniko", show_default=True)
@click.option("--work-dir", type=P, help="Scratch directory for stage roots and layers (default: a temp dir).")
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip", show_default=True)
@click.option("--compression-level", type=int, default=-1, show_default=True)
@click.option("--cache", is_flag=True)
@click.option("--cache-repo")
@click.option("--cache-dir", type=P)
@click.option("--cache-ttl", default="336h", show_default=True)
@click.option("--cache-run-layers/--no-cache-run-layers", default=True)
@click.option("--cache-copy-layers", is_flag=True)
@click.option("--no-push-cache", is_flag=True)
@click.option("--insecure", is_flag=True, help="Push over plain HTTP.")
@click.option("--insecure-pull", is_flag=True, help="Pull over plain HTTP.")
@click.option("--insecure-registry", multiple=True, help="Registry to reach over plain HTTP (repeatable).")
@click.option("--skip-tls-verify", is_flag=True)
@click.option("--skip-tls-verify-pull", is_flag=True)
@click.option("--skip-tls-verify-registry", multiple=True)
@click.option("--registry-certificate", multiple=True, help="HOST=PATH of a CA bundle for that registry.")
@click.option("--registry-mirror", multiple=True, envvar="KANIKO_REGISTRY_MIRROR")
@click.option("--registry-map", multiple=True, envvar="KANIKO_REGISTRY_MAP", help="ORIG=MIRROR[;ORIG2=MIRROR2]")
@click.option("--secret", multiple=True, help="id=ID,src=PATH or id=ID,env=VAR: a secret for RUN --mount=type=secret.")
@click.option("--push-retry", type=int, default=0, show_default=True)
@click.option("--image-download-retry", type=int, default=0, show_default=True)
@click.option("-v", "--verbosity", type=click.Choice(VERBOSITIES), default="info", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "color", "json"]), default="color", show_default=True)
@click.option("--log-timestamp", is_flag=True)
def command(**kw) -> None:
    """Build an image from a Dockerfile and push it (Kaniko's executor)."""
    from pybuildless import transfer
    from pybuildless.build.executor import run_build
    from pybuildless.log import setup_logging

    fmt = kw["log_format"]
    if fmt == "color" and not sys.stderr.isatty():
        fmt = "text"  # Kaniko's default is color; escape codes only help a terminal
    setup_logging(kw["verbosity"], fmt, kw["log_timestamp"])
    transfer.enable(sys.stderr, fmt)  # live pull/push progress on a terminal only
    # Rootless: re-executes this command in a user namespace (and exits with its
    # status) for userns, or auto when not root; before anything else starts.
    from pybuildless.sandbox.userns import maybe_reexec

    isolation = maybe_reexec(kw["isolation"])
    level = kw["compression_level"]
    options = BuildOptions(
        context=kw["context"],
        dockerfile=kw["dockerfile"],
        destinations=tuple(kw["destination"]),
        build_args=_build_args(kw["build_arg"]),
        target=kw["target"],
        no_push=kw["no_push"],
        tar_path=kw["tar_path"],
        oci_layout_path=kw["oci_layout_path"],
        digest_file=kw["digest_file"],
        image_name_with_digest_file=kw["image_name_with_digest_file"],
        image_name_tag_with_digest_file=kw["image_name_tag_with_digest_file"],
        labels=_pairs(kw["label"], "--label"),
        custom_platform=kw["custom_platform"],
        single_snapshot=kw["single_snapshot"],
        snapshot_mode=kw["snapshot_mode"],
        reproducible=kw["reproducible"],
        source_date_epoch=_sde(kw["source_date_epoch"]),
        ignore_paths=tuple(kw["ignore_path"]),
        ignore_var_run=kw["ignore_var_run"],
        cleanup=kw["cleanup"],
        isolation=isolation,
        overlay_snapshots=kw["overlay_snapshots"],
        force=kw["force"],
        jobs=kw["jobs"],
        kaniko_dir=kw["kaniko_dir"],
        work_dir=kw["work_dir"],
        compression=kw["compression"],
        compression_level=None if level == -1 else level,
        cache=kw["cache"],
        cache_repo=kw["cache_repo"],
        cache_dir=kw["cache_dir"],
        cache_ttl=kw["cache_ttl"],
        cache_run_layers=kw["cache_run_layers"],
        cache_copy_layers=kw["cache_copy_layers"],
        no_push_cache=kw["no_push_cache"],
        insecure=kw["insecure"],
        insecure_pull=kw["insecure_pull"],
        insecure_registries=tuple(kw["insecure_registry"]),
        skip_tls_verify=kw["skip_tls_verify"],
        skip_tls_verify_pull=kw["skip_tls_verify_pull"],
        skip_tls_verify_registries=tuple(kw["skip_tls_verify_registry"]),
        registry_certificates=_pairs(kw["registry_certificate"], "--registry-certificate"),
        registry_mirrors=tuple(kw["registry_mirror"]),
        registry_map=_registry_map(kw["registry_map"]),
        secrets=_secrets(kw["secret"]),
        push_retry=kw["push_retry"],
        image_download_retry=kw["image_download_retry"],
    )
    run_build(options)
