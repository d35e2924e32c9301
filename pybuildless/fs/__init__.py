"""The filesystem engine: layer extraction, snapshots, deterministic layer tars, compression.

Typical use by the executor::

    ignore = IgnoreList.for_in_place("/kaniko", extra=args.ignore_paths)   # or IgnoreList.for_root()
    for layer in base_layers:
        with layer.open_compressed() as blob:
            extract_layer(blob, root, ignore=ignore, expect_diff_id=layer.diff_id)
    snap = Snapshotter(root, ignore)
    snap.baseline()
    ...run a step...
    changes = snap.take()                 # or snap.take_paths(copied) after COPY/ADD
    if not changes.empty:
        layer = write_layer(root, changes, layers_dir, compression="gzip", clamp_mtime=sde)
"""

from pybuildless.fs.compress import BlobInfo, CompressingWriter, inspect_blob, open_decompressed, recompress
from pybuildless.fs.extract import ExtractionError, ExtractStats, LayerFormatError, extract_layer
from pybuildless.fs.ignore import IgnoreList
from pybuildless.fs.layer import write_layer, write_root_layer
from pybuildless.fs.snapshot import Changes, Snapshotter

__all__ = [
    "BlobInfo", "Changes", "CompressingWriter", "ExtractStats", "ExtractionError", "IgnoreList",
    "LayerFormatError", "Snapshotter", "extract_layer", "inspect_blob", "open_decompressed", "recompress",
    "write_layer", "write_root_layer",
]
