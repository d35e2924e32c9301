"""`pybuildless pull REF DIR`: download an image into an OCI image layout."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pybuildless import transfer
from pybuildless.errors import ImageFormatError, UsageError
from pybuildless.image.descriptor import Platform
from pybuildless.log import setup_logging
from pybuildless.name import parse_reference
from pybuildless.registry.options import RegistryOptions, parse_host_value_pairs

VERBOSITIES = ("panic", "fatal", "error", "warn", "info", "debug", "trace")


def registry_flags(f):
    """The registry flags shared by pull and push (kaniko's names)."""
    for decorator in reversed([
        click.option("--insecure", is_flag=True,
                     help="The registry may answer in plain HTTP when HTTPS fails (HTTPS is tried first)."),
        click.option("--insecure-registry", multiple=True,
                     help="Registry host that may answer in plain HTTP when HTTPS fails (repeatable)."),
        click.option("--skip-tls-verify", is_flag=True, help="Do not verify registry TLS certificates."),
        click.option("--registry-certificate", multiple=True, help="HOST=PATH of a CA bundle (repeatable)."),
        click.option("--retries", type=click.IntRange(0, 20), default=3, show_default=True),
        click.option("-v", "--verbosity", type=click.Choice(VERBOSITIES), default="info", show_default=True),
        click.option("--log-format", type=click.Choice(["text", "color", "json"]), default="text"),
    ]):
        f = decorator(f)
    return f


def options_from_flags(kw: dict) -> RegistryOptions:
    """Set up logging (and live transfer progress on a terminal) from the log flags and turn the
    registry flags into options (pops them from ``kw``)."""
    log_format = kw.pop("log_format")
    setup_logging(kw.pop("verbosity"), log_format)
    transfer.enable(sys.stderr, log_format)
    insecure = kw.pop("insecure")
    return RegistryOptions(
        insecure=insecure,  # these commands talk to one registry: it is pulled from or pushed to
        insecure_pull=insecure,
        insecure_registries=tuple(kw.pop("insecure_registry")),
        skip_tls_verify=kw.pop("skip_tls_verify"),
        certificates=parse_host_value_pairs(kw.pop("registry_certificate"), "--registry-certificate"),
        retries=kw.pop("retries"),
    )


@click.command("pull")
@click.argument("reference")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--platform", help="os/arch[/variant] to pick from a multi-platform image (default: this host).")
@registry_flags
def command(reference: str, directory: Path, platform: str | None, **kw) -> None:
    """Pull REFERENCE into the OCI image layout DIRECTORY (tagged with the reference's tag)."""
    from pybuildless.image.layout import blob_path, write_layout
    from pybuildless.registry.remote import pull_image  # the HTTP stack: only when a command runs

    options = options_from_flags(kw)
    ref = parse_reference(reference)
    try:
        wanted = Platform.parse(platform) if platform else None
    except ImageFormatError as e:
        raise UsageError(f"--platform: {e}") from None
    image = pull_image(ref, directory, platform=wanted, options=options,
                       blob_path=lambda d: blob_path(directory, d))
    desc = write_layout(directory, image, tag=ref.tag or None)
    click.echo(f"{ref.name}@{desc.digest}" if not ref.digest else ref.name)
