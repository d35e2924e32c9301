"""Applying layers to a root (``apply_layers``), and laying a stage's base layers onto its root
with Kaniko's ``--image-fs-extract-retry`` (``extract_layers``).

Kaniko (pkg/executor/build.go, v1.24.0) wraps the whole base-image extraction in
util.Retry with a one-second initial delay; a retry extracts every layer again, in
order, so the result is the same as one clean pass (each layer overwrites what the
ones before it laid down, whiteouts included).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

from pybuildless.errors import PybuildlessError

log = logging.getLogger(__name__)


def apply_layers(layers: Sequence, root: Path | str, *, ignore=None) -> None:
    """Apply ``layers`` to ``root`` in order, each checked against its diff ID."""
    for layer in layers:
        # tar loads with the first layer extracted: none when the bases come from the layer store or scratch
        from pybuildless.fs.extract import extract_layer

        with layer.open_compressed() as blob:
            extract_layer(blob, root, ignore=ignore, expect_diff_id=layer.diff_id)


def extract_layers(layers: Sequence, root: Path, *, ignore, retries: int = 0,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    for attempt in range(retries + 1):
        try:
            apply_layers(layers, root, ignore=ignore)
            return
        except (PybuildlessError, OSError) as e:
            if attempt == retries:
                raise
            delay = 2 ** attempt
            log.warning("extracting the base image failed (%s); retry %d/%d in %ds (--image-fs-extract-retry)",
                        e, attempt + 1, retries, delay)
            sleep(delay)
