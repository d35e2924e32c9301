"""`pybuildless build` / `executor`: Kaniko's executor flags, mapped onto BuildOptions."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from pybuildless.builder.options import BuildOptions, GitOptions
from pybuildless.cli.kaniko_args import KanikoCommand, parse_bool
from pybuildless.errors import UsageError
from pybuildless.registry.options import RegistryOptions

log = logging.getLogger("pybuildless")

VERBOSITIES = ("panic", "fatal", "error", "warn", "warning", "info", "debug", "trace")


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


def _store_size(value: str) -> int | None:
    if value.strip().lower() in ("none", "off", "unlimited", ""):
        return None
    from pybuildless.store.gc import parse_size

    return parse_size(value, "--layer-store-max-size")


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


def _duration(ctx, param, value: str) -> str:
    from pybuildless.dockerfile.mounts import parse_go_duration  # loads the Dockerfile front end

    try:
        parse_go_duration(value)
    except ValueError:
        raise UsageError(f"--{param.name.replace('_', '-')} {value!r}: expected a Go duration such as 6h, 1h30m "
                         "or 336h") from None
    return value


def _level(ctx, param, value: str) -> str:
    return "warn" if value == "warning" else value  # logrus.ParseLevel takes both spellings


@click.command("build", cls=KanikoCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--context", default="/workspace/", show_default=True,
              help="Build context: a directory, dir://PATH, tar://PATH[.gz], tar://stdin, "
                   "git://HOST/REPO[#REF[#COMMIT]] or s3://BUCKET/KEY.")
@click.option("--context-sub-path", default="", help="Sub path within the given context.")
@click.option("-b", "--bucket", default="", hidden=True, help="Bucket holding the context tarball (as Kaniko's).")
@click.option("-f", "--dockerfile", default="Dockerfile", show_default=True, help="Path to the Dockerfile ('-' for stdin).")
@click.option("-d", "--destination", multiple=True, help="Image reference to push to (repeatable).")
@click.option("--build-arg", multiple=True, help="KEY=VALUE, or KEY to take the value from the environment.")
@click.option("--target", help="Stage to build.")
@click.option("--no-push", is_flag=True, envvar="KANIKO_NO_PUSH", help="Build without pushing.")
@click.option("--tar-path", "--tarPath", "tar_path", type=P, help="Also write a `docker load` tarball here.")
@click.option("--oci-layout-path", type=P, help="Also write an OCI image layout here.")
@click.option("--digest-file", type=P, help="Write the image digest to this file.")
@click.option("--image-name-with-digest-file", type=P, help="Write REPO@DIGEST lines here.")
@click.option("--image-name-tag-with-digest-file", type=P, help="Write REPO:TAG@DIGEST lines here.")
@click.option("--label", multiple=True, help="KEY=VALUE label added to the image (repeatable).")
@click.option("--custom-platform", "--customPlatform", "--platform", "custom_platform",
              help="os/arch[/variant] of the image, or a comma-separated list: one image each, pushed as an index.")
@click.option("--single-snapshot", is_flag=True, help="One layer for the whole final stage.")
@click.option("--snapshot-mode", "--snapshotMode", "snapshot_mode", type=click.Choice(["full", "redo", "time"]),
              default="full", show_default=True,
              help="Accepted for Kaniko compatibility: every mode compares size, mode, owner, mtime and ctime.")
@click.option("--reproducible", is_flag=True, help="Zero timestamps in layers, config and history.")
@click.option("--source-date-epoch", envvar="SOURCE_DATE_EPOCH", help="Clamp timestamps to this time (seconds).")
@click.option("--ignore-path", multiple=True, help="Path never extracted, snapshotted or deleted (repeatable).")
@click.option("--ignore-var-run/--no-ignore-var-run", default=True, show_default=True,
              help="Leave /var/run out of snapshots.")
@click.option("--cleanup", is_flag=True, help="Remove the built filesystem at the end.")
@click.option("--isolation", type=click.Choice(["auto", "chroot", "inplace", "userns"]), default=_default_isolation,
              show_default="auto, or $PYBUILDLESS_ISOLATION", help="How RUN steps execute.")
@click.option("--overlay-snapshots/--no-overlay-snapshots", default=True, show_default=True,
              envvar="PYBUILDLESS_OVERLAY_SNAPSHOTS",
              help="Run RUN steps on an overlay and read their changes from its upper dir, where mounts allow.")
@click.option("--layer-store/--no-layer-store", default=True, show_default=True, envvar="PYBUILDLESS_LAYER_STORE",
              help="Keep base layers unpacked in $XDG_CACHE_HOME/pybuildless (or --cache-dir) and make stage roots "
                   "from there (not in place).")
@click.option("--layer-store-max-size", default="10GB", show_default=True, metavar="SIZE",
              envvar="PYBUILDLESS_LAYER_STORE_MAX_SIZE",
              help="After a build, drop the least recently used stored layers beyond SIZE ('none': no limit).")
@click.option("--jobs", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Independent stages built in parallel (at most the number of cores).")
@click.option("--force", is_flag=True, help="Build in place even where no container is detected.")
@click.option("--kaniko-dir", type=P, envvar="KANIKO_DIR", default="/kaniko", show_default=True)
@click.option("--work-dir", type=P, help="Scratch directory for stage roots and layers (default: a temp dir).")
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip", show_default=True)
@click.option("--compression-level", type=int, default=-1, show_default=True)
@click.option("--cache", is_flag=True, help="Use the layer cache.")
@click.option("--cache-repo", help="Cache repository, or oci:/path (default: <first destination>/cache).")
@click.option("--cache-dir", type=P, help="Base-image cache (from `pybuildless warm`) and RUN cache mounts.")
@click.option("--cache-ttl", default="336h", show_default=True, callback=_duration, help="Go duration: 6h, 1h30m.")
@click.option("--cache-run-layers/--no-cache-run-layers", default=True, show_default=True,
              help="Cache RUN layers (=false: RUN steps always run; other steps are still cached).")
@click.option("--cache-copy-layers", is_flag=True,
              help="Accepted; COPY and ADD layers are always cached (their keys hash the copied contents).")
@click.option("--compressed-caching/--no-compressed-caching", default=True, show_default=True,
              help="Accepted; cached layers are streamed to disk, so memory stays bounded either way.")
@click.option("--no-push-cache", is_flag=True)
@click.option("--insecure", is_flag=True, help="Destinations and the cache repo may answer in plain HTTP "
              "when HTTPS fails (not the base images: --insecure-pull).")
@click.option("--insecure-pull", is_flag=True, help="Base-image registries may answer in plain HTTP when HTTPS fails.")
@click.option("--insecure-registry", multiple=True,
              help="Registry that may answer in plain HTTP when HTTPS fails, pulls and pushes (repeatable).")
@click.option("--skip-tls-verify", is_flag=True, help="Do not verify TLS certificates, pulls included (as Kaniko).")
@click.option("--skip-tls-verify-pull", is_flag=True, help="Do not verify TLS certificates when pulling.")
@click.option("--skip-tls-verify-registry", multiple=True, help="Registry whose certificate is not verified.")
@click.option("--registry-certificate", multiple=True, help="HOST=PATH of a CA bundle for that registry.")
@click.option("--registry-client-cert", multiple=True, help="HOST=CERT,KEY: client certificate for mutual TLS.")
@click.option("--registry-mirror", multiple=True, envvar="KANIKO_REGISTRY_MIRROR")
@click.option("--registry-map", multiple=True, envvar="KANIKO_REGISTRY_MAP", help="ORIG=MIRROR[;ORIG2=MIRROR2]")
@click.option("--skip-default-registry-fallback", is_flag=True,
              help="Pull Docker Hub images only from --registry-mirror, never from Docker Hub itself.")
@click.option("--secret", multiple=True, help="id=ID,src=PATH or id=ID,env=VAR: a secret for RUN --mount=type=secret.")
@click.option("--push-retry", type=int, default=0, show_default=True)
@click.option("--push-ignore-immutable-tag-errors", is_flag=True,
              help="A push refused because the tag is immutable counts as done.")
@click.option("--skip-push-permission-check", is_flag=True,
              help="Do not check, before building, that every destination accepts a push.")
@click.option("--image-download-retry", type=int, default=0, show_default=True)
@click.option("--image-fs-extract-retry", type=int, default=0, show_default=True,
              help="Retries for extracting a base image's filesystem.")
@click.option("--skip-unused-stages", is_flag=True, help="Accepted; stages the target does not need are always skipped.")
@click.option("--use-new-run", is_flag=True, help="Accepted; RUN changes always come from the overlay or stat snapshot.")
@click.option("--force-build-metadata", is_flag=True, help="Every step adds a layer, even a metadata-only one.")
@click.option("--git", multiple=True, help="branch=NAME, single-branch=BOOL, recurse-submodules=BOOL, "
                                            "insecure-skip-tls=BOOL for a git:// context.")
@click.option("-v", "--verbosity", type=click.Choice(VERBOSITIES, case_sensitive=False), default="info",
              show_default=True, callback=_level)
@click.option("--log-format", type=click.Choice(["text", "color", "json"]), default="color", show_default=True)
@click.option("--log-timestamp", is_flag=True)
def command(**kw) -> None:
    """Build an image from a Dockerfile and push it (Kaniko's executor)."""
    from pybuildless import transfer
    from pybuildless.builder.executor import run_build
    from pybuildless.cli.deferred import start_collector
    from pybuildless.log import setup_logging

    fmt = kw["log_format"]
    if fmt == "color" and not sys.stderr.isatty():
        fmt = "text"  # Kaniko's default is color; escape codes only help a terminal
    setup_logging(kw["verbosity"], fmt, kw["log_timestamp"])
    for note in click.get_current_context().meta.get("kaniko_notes", ()):
        log.warning("%s", note)
    for line in no_effect_lines(kw):
        log.info("%s", line)
    transfer.enable(sys.stderr, fmt)  # live pull/push progress on a terminal only
    # Rootless: re-executes this command in a user namespace (and exits with its
    # status) for userns, or auto when not root; before anything else starts.
    from pybuildless.sandbox.userns import maybe_reexec

    isolation = maybe_reexec(kw["isolation"])
    options = build_options(kw, isolation)
    start_collector()  # paused by the entry point through start-up (cli/deferred.py)
    run_build(options)


def build_options(kw: dict, isolation: str) -> BuildOptions:
    level = kw["compression_level"]
    return BuildOptions(
        context=_context(kw["context"], kw["bucket"]),
        context_sub_path=kw["context_sub_path"],
        git=_git(kw["git"]),
        dockerfile=kw["dockerfile"],
        destinations=tuple(kw["destination"]),
        build_args=_build_args(_nonempty(kw["build_arg"])),
        target=kw["target"],
        no_push=kw["no_push"],
        tar_path=kw["tar_path"],
        oci_layout_path=kw["oci_layout_path"],
        digest_file=kw["digest_file"],
        image_name_with_digest_file=kw["image_name_with_digest_file"],
        image_name_tag_with_digest_file=kw["image_name_tag_with_digest_file"],
        labels=_pairs(_nonempty(kw["label"]), "--label"),
        custom_platform=kw["custom_platform"] or None,
        single_snapshot=kw["single_snapshot"],
        reproducible=kw["reproducible"],
        source_date_epoch=_sde(kw["source_date_epoch"]),
        ignore_paths=_nonempty(kw["ignore_path"]),
        ignore_var_run=kw["ignore_var_run"],
        cleanup=kw["cleanup"],
        isolation=isolation,
        overlay_snapshots=kw["overlay_snapshots"],
        layer_store=kw["layer_store"],
        layer_store_max_size=_store_size(kw["layer_store_max_size"]),
        force=kw["force"],
        jobs=kw["jobs"],
        kaniko_dir=kw["kaniko_dir"],
        work_dir=kw["work_dir"],
        compression=kw["compression"],
        compression_level=None if level == -1 else level,
        cache=kw["cache"],
        cache_repo=kw["cache_repo"] or None,
        cache_dir=kw["cache_dir"],
        cache_ttl=kw["cache_ttl"],
        cache_run_layers=kw["cache_run_layers"],
        no_push_cache=kw["no_push_cache"],
        registry=registry_options(kw),
        secrets=_secrets(kw["secret"]),
        push_retry=kw["push_retry"],
        push_ignore_immutable_tag_errors=kw["push_ignore_immutable_tag_errors"],
        skip_push_permission_check=kw["skip_push_permission_check"],
        image_fs_extract_retry=kw["image_fs_extract_retry"],
        force_build_metadata=kw["force_build_metadata"],
    )


def registry_options(kw: dict) -> RegistryOptions:
    """The registry flags, the one place they become the registry client's options."""
    return RegistryOptions(
        insecure=kw["insecure"],
        insecure_pull=kw["insecure_pull"],
        insecure_registries=_nonempty(kw["insecure_registry"]),
        skip_tls_verify=kw["skip_tls_verify"],
        skip_tls_verify_pull=kw["skip_tls_verify_pull"],
        skip_tls_verify_registries=_nonempty(kw["skip_tls_verify_registry"]),
        certificates=_pairs(_nonempty(kw["registry_certificate"]), "--registry-certificate"),
        client_certificates=_client_certs(_nonempty(kw["registry_client_cert"])),
        registry_mirrors=_nonempty(kw["registry_mirror"]),
        registry_map=_registry_map(kw["registry_map"]),
        skip_default_registry_fallback=kw["skip_default_registry_fallback"],
        # one client pulls and pushes: at least 3 retries, more when either flag asks for more
        retries=max(3, kw["push_retry"], kw["image_download_retry"]),
    )


# Kaniko flags whose job is always done here, or not needed: one info line each, saying why.
NO_EFFECT = {
    "use_new_run": (True, "--use-new-run: RUN changes always come from the overlay upper dir or a stat snapshot "
                          "of the paths that changed; there is no other RUN implementation to choose"),
    "skip_unused_stages": (True, "--skip-unused-stages: always on here, as in BuildKit: only the stages the "
                                 "target needs are built"),
    "compressed_caching": (False, "--compressed-caching=false: cached layers are compressed while streaming to "
                                  "disk, so memory stays bounded either way"),
    # Kaniko v1.24.0 pkg/util/util.go: full hashes mode, mtime, owner, file capabilities and contents,
    # redo mode, mtime, size and owner, time the mtime alone. Here a change is what a stat with ctime
    # shows (or what the kernel copied up to a RUN overlay), for every mode: all that full finds, and
    # also a file whose ctime alone moved; never fewer changes than redo or time would find.
    "snapshot_mode": ("*", "--snapshot-mode={}: every mode finds changes the same way here, by size, mode, "
                           "owner, mtime and ctime: whatever full, redo or time would find, at no extra cost"),
    "cache_copy_layers": (True, "--cache-copy-layers: COPY and ADD layers are always cached here (their keys "
                                "hash the copied files' contents)"),
}


def no_effect_lines(kw: dict) -> list[str]:
    out = []
    for name, (when, text) in NO_EFFECT.items():
        value = kw.get(name)
        if when == "*" and value not in (None, "full"):
            out.append(text.format(value))
        elif when is not None and when != "*" and value == when:
            out.append(text)
    return out


def _nonempty(values: tuple[str, ...]) -> tuple[str, ...]:
    # CI templates pass "--build-arg=$X" with X unset; Kaniko's multi-value flags take
    # the empty value and nothing comes of it, so it is dropped here.
    return tuple(v for v in values if v != "")


def _context(context: str, bucket: str) -> str:
    # root.go resolveSourceContext: --bucket wins, gs:// unless it names a scheme itself.
    if not bucket:
        return context
    return bucket if "://" in bucket else f"gs://{bucket}"


def _git(values: tuple[str, ...]) -> GitOptions:
    # config.KanikoGitOptions.Set: KEY=VALUE, booleans by strconv.ParseBool, unknown keys ignored.
    fields: dict[str, object] = {}
    for v in values:
        key, found, value = v.partition("=")
        if not found:
            raise UsageError(f"--git {v!r}: invalid git flag, must be in the key=value format")
        if key == "branch":
            fields["branch"] = value
        elif key in ("single-branch", "recurse-submodules", "insecure-skip-tls"):
            fields[key.replace("-", "_")] = parse_bool(value, f"--git {key}")
        else:
            log.info("--git %s: unknown key, ignored (as Kaniko does)", key)
    return GitOptions(**fields)  # type: ignore[arg-type]


def _client_certs(values: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    out = []
    for host, paths in _pairs(values, "--registry-client-cert"):
        cert, comma, key = paths.partition(",")
        if not comma or not cert or not key:
            raise UsageError(f"--registry-client-cert {host}={paths!r}: expected HOST=CERT,KEY "
                             "(paths of the client certificate and its key)")
        for path in (cert, key):
            if not os.path.isfile(path):
                raise UsageError(f"--registry-client-cert {host}=...: {path} is not a file")
        out.append((host, cert, key))
    return tuple(out)
