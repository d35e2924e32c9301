"""`pybuildless prune`: free the local store of unpacked layers (least recently used first)."""

from __future__ import annotations

from pathlib import Path

import click


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@click.command("prune")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Store root (default: $XDG_CACHE_HOME/pybuildless, else ~/.cache/pybuildless).")
@click.option("--max-size", default=None, metavar="SIZE",
              help="Keep the most recently used layers up to SIZE (e.g. 10GB); default: remove every "
                   "layer no build is using.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where builds made their scratch directories (default: the temp dir); the ones a "
                   "crashed or killed build left behind are removed.")
def command(cache_dir: Path | None, max_size: str | None, work_dir: Path | None) -> None:
    """Remove unpacked base layers from the local store; layers in use by a running build stay.
    Also removes the scratch trees of builds whose removal died with them."""
    import tempfile

    from pybuildless.fs.trash import sweep
    from pybuildless.store.gc import parse_size, prune
    from pybuildless.store.layers import LayerStore

    limit = parse_size(max_size) if max_size is not None else None
    swept = sweep(work_dir if work_dir is not None else Path(tempfile.gettempdir()))
    if swept:
        click.echo(f"removed {swept} scratch tree(s) left by builds that ended")
    result = prune(LayerStore(cache_dir), limit)
    click.echo(f"removed {len(result.removed)} layer(s), freed {_human(result.freed_bytes)}; "
               f"kept {result.kept} ({_human(result.kept_bytes)})"
               + (f", {len(result.in_use)} in use" if result.in_use else ""))
