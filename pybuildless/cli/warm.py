"""`pybuildless warm`: fill the base-image cache (Kaniko's warmer)."""

from __future__ import annotations

from pathlib import Path

import click

from pybuildless.cli.pull import options_from_flags, registry_flags
from pybuildless.errors import UsageError
from pybuildless.image.descriptor import Platform


@click.command("warm")
@click.option("-i", "--image", "images", multiple=True, help="Image to cache (repeatable).")
@click.option("-c", "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default="/cache",
              show_default=True)
@click.option("-f", "--dockerfile", type=click.Path(dir_okay=False, path_type=Path),
              help="Also cache every FROM image of this Dockerfile.")
@click.option("--build-arg", multiple=True, help="KEY=VALUE for the Dockerfile's meta ARGs.")
@click.option("--custom-platform", help="os/arch[/variant] to cache (default: this host).")
@click.option("--force", is_flag=True, help="Pull again even when already cached.")
@registry_flags
def command(images, cache_dir, dockerfile, build_arg, custom_platform, force, **kw) -> None:
    """Download base images into CACHE_DIR for `executor --cache --cache-dir`."""
    from pybuildless.cache.baseimages import warm

    options = options_from_flags(kw)
    platform = Platform.parse(custom_platform) if custom_platform else Platform.host()
    names = list(images)
    if dockerfile is not None:
        names += _from_images(dockerfile, build_arg, platform)
    if not names:
        raise UsageError("warm: give --image or --dockerfile")
    for name in dict.fromkeys(names):
        tag = warm(cache_dir, name, platform=platform, options=options, force=force)
        click.echo(f"{name} cached in {cache_dir} as {tag}")


def _from_images(dockerfile: Path, build_args: tuple[str, ...], platform: Platform) -> list[str]:
    from pybuildless.dockerfile.args import GlobalArgs, platform_args
    from pybuildless.dockerfile.parser import load_dockerfile
    from pybuildless.dockerfile.stages import plan_build

    args = dict(a.partition("=")[::2] for a in build_args)
    df = load_dockerfile(str(dockerfile))
    glob = GlobalArgs.resolve(df.meta_args, args, platform_args(str(platform)))
    plan = plan_build(df, None, glob.env)
    return sorted(i for i in plan.images if i != "scratch")
