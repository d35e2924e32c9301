"""`pybuildless push DIR REF...`: upload an image from an OCI image layout."""

from __future__ import annotations

from pathlib import Path

import click

from pybuildless.cli.pull import options_from_flags, registry_flags
from pybuildless.name import parse_reference


@click.command("push")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("references", nargs=-1, required=True)
@click.option("--image", "layout_ref", help="Tag or digest of the image in the layout (default: its only image).")
@registry_flags
def command(directory: Path, references: tuple[str, ...], layout_ref: str | None, **kw) -> None:
    """Push the image in the OCI layout DIRECTORY to each REFERENCE; prints REPO@DIGEST per destination."""
    from pybuildless.image.layout import read_layout
    from pybuildless.registry.push import push_image  # the HTTP stack: only when a command runs

    options = options_from_flags(kw)
    refs = [parse_reference(r) for r in references]  # all validated before any upload
    image = read_layout(directory, layout_ref)
    digest = push_image(image, refs, options=options)
    for ref in refs:
        click.echo(f"{ref.context}@{digest}")
