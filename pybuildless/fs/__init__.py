"""The filesystem engine: layer extraction, snapshots, deterministic layer tars, compression."""
