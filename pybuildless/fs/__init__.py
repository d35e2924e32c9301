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

from pybuildless.lazyexports import lazy_exports

# Loaded on first use: a build that only cleans up or checks mounts needs neither tar nor compression.
_NAMES = {
    "compress": "BlobInfo CompressingWriter inspect_blob open_decompressed recompress",
    "extract": "ExtractionError ExtractStats LayerFormatError extract_layer",
    "ignore": "IgnoreList",
    "layer": "write_layer write_root_layer",
    "changes": "Changes",
    "snapshot": "Snapshotter",
}
__getattr__, __dir__ = lazy_exports(__name__, {name: module for module, names in _NAMES.items()
                                               for name in names.split()})

__all__ = [
    "BlobInfo", "Changes", "CompressingWriter", "ExtractStats", "ExtractionError", "IgnoreList",
    "LayerFormatError", "Snapshotter", "extract_layer", "inspect_blob", "open_decompressed", "recompress",
    "write_layer", "write_root_layer",
]
