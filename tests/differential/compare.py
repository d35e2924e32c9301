"""Comparing an image built by pybuildless with the same Dockerfile built by a reference builder
(BuildKit, the reference; buildah, a second opinion).

Both images are unpacked with skopeo + umoci, then compared:
- the file tree: every path's type, permission bits (incl. setuid/setgid/sticky), owner, content
  (sha256) or symlink target or device number, and its extended attributes;
- hardlink groups (which paths share an inode);
- the config fields a Dockerfile sets (``CONFIG_FIELDS``);
- the number of layers, for cases whose rule is about layers (``# layers: compared``).

Every difference a reference builder is allowed to have is listed in ``ALLOWED`` and ``LEFTOVERS``
below, each with its reason and source; anything else that differs fails the case.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Config fields a Dockerfile controls. Not compared: history (``created_by`` strings differ between
# builders by design: BuildKit appends "# buildkit"), ``created``, and image-level fields
# (architecture, os, rootfs) that no instruction sets.
CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
                 "Healthcheck", "StopSignal", "Shell", "OnBuild")

BUILDKIT, BUILDAH = "buildkit", "buildah"

# Compared against BuildKit only: BuildKit sets ArgsEscaped for shell-form CMD/ENTRYPOINT (a Docker
# config field outside the Dockerfile reference, which buildah does not write).
REFERENCE_ONLY_FIELDS = {BUILDKIT: ("ArgsEscaped",), BUILDAH: ()}


@dataclass(frozen=True)
class Leftover:
    """A path a reference builder leaves in images whatever the case, when the base lacks it."""

    reference: str
    path: str
    shape: str  # "empty-dir": an empty directory; "empty-file": an empty regular file
    reason: str
    source: str


@dataclass(frozen=True)
class Allowance:
    """A known, explained difference in one case: ``key`` is a path, "hardlinks", "layers" or "config FIELD"."""

    reference: str
    case: str
    key: str
    reason: str
    source: str


# ---------------------------------------------------------------------------------------------------
# The allowed differences (all of them; nothing else may differ).
# ---------------------------------------------------------------------------------------------------

_RUNC_MOUNT_POINTS = ("BuildKit 0.8 (Debian's docker.io 20.10) runs RUN steps with runc, which creates the mount "
                      "points /dev, /proc and /sys in a rootfs that lacks them, and keeps them in the layer: its "
                      "stub cleaner only considers /etc/hosts, /etc/resolv.conf and RUN --mount targets. Real "
                      "bases all have these directories; only the minimal busybox test base lacks them, so the "
                      "difference never shows in practice (RUN --mount targets, which do, are not allowed)")
_BUILDAH_BINDS = ("buildah's chroot isolation bind-mounts these into RUN steps and leaves empty files behind when "
                  "the base lacks them (BuildKit and pybuildless leave nothing)")
_BUILDAH_MOUNT_POINTS = "buildah's chroot isolation leaves the empty mount points of the file systems it mounts"

LEFTOVERS: tuple[Leftover, ...] = (
    *(Leftover(BUILDKIT, p, "empty-dir", _RUNC_MOUNT_POINTS,
               "observed with docker.io 20.10.24+dfsg1 on Debian 12; moby v20.10.24 "
               "vendor/github.com/moby/buildkit/executor/stubs.go (MountStubsCleaner)")
      for p in ("/dev", "/proc", "/sys")),
    *(Leftover(BUILDAH, p, "empty-file", _BUILDAH_BINDS, "buildah 1.28 run_linux.go (chroot isolation)")
      for p in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")),
    *(Leftover(BUILDAH, p, "empty-dir", _BUILDAH_MOUNT_POINTS, "buildah 1.28 chroot/run_linux.go")
      for p in ("/dev", "/proc", "/run", "/sys")),
)

ALLOWED: tuple[Allowance, ...] = (
    Allowance(BUILDAH, "hardlinks_across_layers", "hardlinks",
              "buildah's vfs diff puts only the new name of a link to a lower-layer file in the layer, so the "
              "link is lost; BuildKit's overlay diff copies the target up and keeps it",
              "buildah 1.28 with the vfs driver (containers/storage drivers/vfs: naive diff)"),
    Allowance(BUILDAH, "shell_form_commands", "/shell.txt",
              "buildah ignores SHELL when building OCI-format images (it warns 'SHELL is not supported for OCI "
              "image format'), so its RUN does not get -e", "buildah 1.28 imagebuildah/stage_executor.go"),
    Allowance(BUILDAH, "shell_form_commands", "config Shell",
              "buildah does not record SHELL in OCI-format images (same warning)",
              "buildah 1.28 imagebuildah/stage_executor.go"),
    *(Allowance(BUILDAH, "workdir_creation", p,
                "buildah creates a WORKDIR only when a later step uses it; BuildKit always creates it",
                "buildah 1.28 imagebuildah/stage_executor.go; BuildKit dockerfile2llb dispatchWorkdir")
      for p in ("/srv", "/srv/app")),
)

# buildah (not BuildKit) moves a redefined ENV variable to the end of Env; a runtime sees the same
# environment either way, so against buildah Env is compared as a mapping. Against BuildKit the order
# is compared too.
ENV_AS_MAPPING = frozenset({BUILDAH})
# Labels buildah adds about itself.
OWN_LABELS = {BUILDAH: frozenset({"io.buildah.version"}), BUILDKIT: frozenset()}


def allowances(reference: str, case: str) -> dict[str, Allowance]:
    return {a.key: a for a in ALLOWED if a.reference == reference and a.case == case}


# ---------------------------------------------------------------------------------------------------
# Reading an unpacked image
# ---------------------------------------------------------------------------------------------------

Entry = tuple  # (kind, mode, uid, gid, what, xattrs): see tree_of


def tree_of(root: Path) -> dict[str, Entry]:
    """path -> (kind f/d/l/o, permission bits, uid, gid, sha256 | link target | rdev, sorted xattrs)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                kind, what = "f", hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                kind, what = "l", os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                kind, what = "d", ""
            else:
                kind, what = "o", f"{stat.S_IFMT(st.st_mode):o}:{st.st_rdev}"
            try:
                names = os.listxattr(p, follow_symlinks=False)
            except OSError:
                names = []
            xattrs = tuple(sorted((n, os.getxattr(p, n, follow_symlinks=False).hex()) for n in names))
            out["/" + str(p.relative_to(root))] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what,
                                                   xattrs)
    return out


def hardlink_groups(root: Path) -> set[frozenset[str]]:
    """Sets of paths sharing an inode (regular files with more than one link)."""
    by_inode: dict[int, set[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                by_inode.setdefault(st.st_ino, set()).add("/" + str(p.relative_to(root)))
    return {frozenset(paths) for paths in by_inode.values()}


def describe(entry: Entry) -> str:
    kind, mode, uid, gid, what = entry[:5]
    xattrs = entry[5] if len(entry) > 5 else ()
    detail = {"f": f"sha256={what[:12]}", "l": f"-> {what}", "d": "", "o": f"dev={what}"}[kind]
    text = f"{kind} {mode:04o} {uid}:{gid} {detail}".rstrip()
    return text + (f" xattrs={dict(xattrs)}" if xattrs else "")


# ---------------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------------

def _is_leftover(reference: str, path: str, entry: Entry, theirs: dict[str, Entry]) -> bool:
    for left in LEFTOVERS:
        if left.reference != reference or left.path != path:
            continue
        if left.shape == "empty-file":
            return entry[0] == "f" and entry[4] == EMPTY_SHA256
        return entry[0] == "d" and not any(p.startswith(path + "/") for p in theirs)
    return False


def tree_differences(ours: dict[str, Entry], theirs: dict[str, Entry], reference: str) -> dict[str, str]:
    """problem key (the path) -> readable text, for every path that differs apart from ``LEFTOVERS``."""
    out = {}
    width = max(len(reference), len("pybuildless"))
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if a == b or (a is None and _is_leftover(reference, path, b, theirs)):
            continue
        if a is None:
            out[path] = f"{path}: only in {reference} ({describe(b)})"
        elif b is None:
            out[path] = f"{path}: only in pybuildless ({describe(a)})"
        else:
            out[path] = (f"{path}:\n    {'pybuildless':<{width}}  {describe(a)}\n"
                         f"    {reference:<{width}}  {describe(b)}")
    return out


def hardlink_differences(ours: set[frozenset[str]], theirs: set[frozenset[str]], reference: str) -> dict[str, str]:
    if ours == theirs:
        return {}
    return {"hardlinks": f"hardlink groups:\n    pybuildless: {sorted(map(sorted, ours))}\n"
                         f"    {reference}: {sorted(map(sorted, theirs))}"}


def _fields(reference: str) -> tuple[str, ...]:
    return CONFIG_FIELDS + REFERENCE_ONLY_FIELDS[reference]


def comparable_config(config: dict, reference: str, fields: tuple[str, ...] = ()) -> dict:
    c = config.get("config") or {}
    out = {}
    for key in fields or _fields(reference):
        value = c.get(key)
        if key == "Labels" and value:
            value = {k: v for k, v in value.items() if k not in OWN_LABELS[reference]}
        if key == "Env" and value and reference in ENV_AS_MAPPING:
            names = [item.partition("=")[0] for item in value]
            assert len(names) == len(set(names)), f"duplicate Env names: {value}"
            value = dict(item.partition("=")[::2] for item in value)
        out[key] = value or None  # absent and empty mean the same to a runtime
    return out


def config_differences(ours: dict, theirs: dict, reference: str) -> dict[str, str]:
    fields = _fields(reference)
    a, b = comparable_config(ours, BUILDKIT, fields), comparable_config(theirs, reference, fields)
    if reference in ENV_AS_MAPPING and a["Env"]:
        a["Env"] = dict(item.partition("=")[::2] for item in a["Env"])
    return {f"config {k}": f"config {k}:\n    pybuildless: {a[k]!r}\n    {reference}: {b[k]!r}"
            for k in fields if a[k] != b[k]}


def layer_differences(ours: dict, theirs: dict, reference: str) -> dict[str, str]:
    n_ours, n_theirs = len(ours.get("layers") or []), len(theirs.get("layers") or [])
    if n_ours == n_theirs:
        return {}
    return {"layers": f"layer count: pybuildless {n_ours}, {reference} {n_theirs}"}


@dataclass(frozen=True)
class ImageView:
    """What the comparison reads from one unpacked image."""

    tree: dict[str, Entry]
    hardlinks: set[frozenset[str]]
    config: dict
    manifest: dict

    @classmethod
    def of(cls, unpacked) -> "ImageView":
        return cls(tree_of(unpacked.rootfs), hardlink_groups(unpacked.rootfs), unpacked.config, unpacked.manifest)


def differences(ours: ImageView, theirs: ImageView, reference: str, compare_layers: bool) -> dict[str, str]:
    """Every difference (problem key -> text) before per-case allowances."""
    problems = tree_differences(ours.tree, theirs.tree, reference)
    problems.update(hardlink_differences(ours.hardlinks, theirs.hardlinks, reference))
    problems.update(config_differences(ours.config, theirs.config, reference))
    if compare_layers:
        problems.update(layer_differences(ours.manifest, theirs.manifest, reference))
    return problems


def verdict(case, ours: ImageView, theirs: ImageView, reference: str) -> list[str]:
    """Failure lines for ``case`` (empty when the images match): unexplained differences, each naming
    the case's rule, and allowances that no longer trigger (stale, so the field is compared again)."""
    problems = differences(ours, theirs, reference, case.compare_layers)
    allowed = allowances(reference, case.name)
    out = [text for key, text in problems.items() if key not in allowed]
    if out:
        out.insert(0, f"{case.name} (rule: {case.rule}): pybuildless and {reference} images differ:")
    stale = set(allowed) - set(problems)
    if stale:
        out.append(f"{case.name}: allowed differences no longer seen (drop them from ALLOWED): {sorted(stale)}")
    return out
