"""pybuildless: build OCI/Docker images from a Dockerfile without a daemon."""

__version__ = "0.1.0"
