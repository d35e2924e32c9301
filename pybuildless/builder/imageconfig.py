"""Image config and history bookkeeping, on raw dicts so unknown keys survive.

The config is the OCI/Docker image config (``architecture``, ``os``,
``config``, ``history``, ...). Only ``config.*`` fields and ``history`` change
during a build; ``rootfs`` is written by ``build_image`` from the layers.
"""

from __future__ import annotations

import copy
from typing import Any

from pybuildless.image.descriptor import Platform
from pybuildless.image.times import rfc3339

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def scratch_config(platform: Platform) -> dict[str, Any]:
    """The config of FROM scratch: BuildKit gives it the default PATH."""
    return {
        "architecture": platform.architecture,
        "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }


def stage_config(base: dict[str, Any], platform: Platform | None) -> dict[str, Any]:
    """A working copy of the base config for a new stage.

    The base's ONBUILD triggers are replayed and cleared, so grandchildren do
    not inherit them; ``created``/``author`` belong to the base, not to us.
    """
    cfg = copy.deepcopy(base)
    cfg.pop("created", None)
    cfg.pop("author", None)
    cfg.setdefault("config", {})
    cfg["config"].pop("OnBuild", None)
    cfg.setdefault("history", [])
    if platform is not None:
        cfg["architecture"] = platform.architecture
        cfg["os"] = platform.os
        if platform.variant:
            cfg["variant"] = platform.variant
        else:
            cfg.pop("variant", None)
    env = cfg["config"].get("Env") or []
    if not any(e.startswith("PATH=") for e in env):
        # appended after the base's own variables, as BuildKit does (moby/buildkit@73ed6825
        # frontend/dockerfile/dockerfile2llb/convert.go, "make sure that PATH is always set")
        cfg["config"]["Env"] = [*env, f"PATH={DEFAULT_PATH}"]
    return cfg


def add_history(
    cfg: dict[str, Any], created_by: str, *, empty_layer: bool, created: str | None, comment: str | None = None
) -> None:
    """Append a history entry; ``created=None`` leaves its time to ``finalize``."""
    entry: dict[str, Any] = {"created": created, "created_by": created_by}
    if created is None:
        del entry["created"]
    if comment:
        entry["comment"] = comment
    if empty_layer:
        entry["empty_layer"] = True
    cfg["history"].append(entry)


def fill_history_times(history: list[dict[str, Any]]) -> str | None:
    """Give entries without a time one, as BuildKit's image exporter does (moby
    builder/builder-next/exporter/writer.go@v20.10.24 normalizeLayersAndHistory): the time of
    the first layer entry after the first entry without one (else the last time seen) until
    then, and the previous entry's time afterwards. Returns the last entry's time, which is
    the image's ``created`` (patchImageConfig)."""
    created = None
    gap = False
    for entry in history:
        if entry.get("created"):
            created = entry["created"]
            if gap:
                break
        else:
            gap = True
    gap = False
    for entry in history:
        if entry.get("created"):
            if gap:
                created = entry["created"]
        else:
            gap = True
            if created is not None:
                entry["created"] = created
    return history[-1].get("created") if history else None


def finalize(cfg: dict[str, Any], *, created: str | None) -> dict[str, Any]:
    """Drop empty fields the way BuildKit leaves them out, and stamp ``created``: the given
    time, else the last history entry's (after ``fill_history_times``), else now."""
    out = copy.deepcopy(cfg)
    if created is None:
        created = fill_history_times(out.setdefault("history", [])) or rfc3339(None)
    else:
        for entry in out.setdefault("history", []):
            entry.setdefault("created", created)
    out["created"] = created
    c = out.get("config", {})
    for key in [k for k, v in c.items() if v in (None, [], {}, "")]:
        del c[key]
    return out
