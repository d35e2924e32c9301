"""A local store of unpacked image layers, shared by builds (see ``store.layers``)."""

from pybuildless.lazyexports import lazy_exports

# Loaded on first use: importing store.lock or store.stack alone does not load the whole store.
__getattr__, __dir__ = lazy_exports(__name__, {name: "layers" for name in (
    "LayerLease", "LayerStore", "StoredLayer", "StoreError", "default_root")})

__all__ = ["LayerLease", "LayerStore", "StoredLayer", "StoreError", "default_root"]
