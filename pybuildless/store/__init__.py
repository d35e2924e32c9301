"""A local store of unpacked image layers, shared by builds (see ``store.layers``)."""

from pybuildless.store.layers import LayerLease, LayerStore, StoredLayer, StoreError, default_root

__all__ = ["LayerLease", "LayerStore", "StoredLayer", "StoreError", "default_root"]
