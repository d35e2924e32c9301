"""Image model: digests, descriptors, platforms, manifests, configs and the formats that store them."""
