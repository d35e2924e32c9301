"""Compatibility alias: in-root path resolution moved to ``pybuildless.fs.rootpath``.

It is a filesystem rule that ``fs`` itself needs (the user lookup), and ``fs`` must not import the
sandbox; kept while other modules still import this path.
"""

from pybuildless.fs.rootpath import MAX_SYMLINKS, read_file_in_root, resolve_in_root  # noqa: F401
