"""Debian-sized base images from this machine's installed Debian packages, without a network.

``debian``: the files of every installed package with Priority ``required`` or ``Essential: yes``
and of what they depend on (the set ``debootstrap --variant=minbase`` installs, as far as this
machine has it): about 6,000 entries and 115 MB, the size of ``debian:bookworm``. ``python``: the
same plus ``python3`` and ``python3.11-venv`` with their dependencies (Debian's own layout, so
``python3 -m venv`` finds pip in /usr/share/python-wheels).

The files are those ``dpkg -L`` lists, copied as they are on this machine (conffiles included);
/etc/passwd and /etc/group are base-passwd's masters, as its postinst writes them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

PYTHON_PACKAGES = ("python3", "python3.11-venv")
_NAME = re.compile(r"[\s(:]")


def _installed() -> dict[str, tuple[bool, list[list[str]]]]:
    """package -> (in the minimal base by itself, its Pre-Depends + Depends as alternatives lists)."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${Priority}\t${Essential}\t${Pre-Depends},${Depends}\t${Status}\n"],
        check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        name, priority, essential, depends, status = line.split("\t")
        if not status.endswith(" installed"):
            continue
        alternatives = [[_NAME.split(a.strip())[0] for a in group.split("|")]
                        for group in depends.split(",") if group.strip()]
        found[name] = (priority == "required" or essential == "yes", alternatives)
    return found


def package_closure(extra: tuple[str, ...] = ()) -> list[str]:
    """The minimal base's packages plus ``extra``, closed over their dependencies (the first
    installed alternative of each)."""
    installed = _installed()
    missing = [p for p in extra if p not in installed]
    if missing:
        raise RuntimeError(f"not installed on this machine: {', '.join(missing)}")
    todo = [p for p, (base, _) in installed.items() if base] + list(extra)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for group in installed[name][1]:
            choice = next((a for a in group if a in installed), None)
            if choice is not None:
                todo.append(choice)
    return sorted(seen)


def _package_paths(packages: list[str]) -> list[str]:
    paths: set[str] = set()
    for name in packages:
        out = subprocess.run(["dpkg", "-L", name], check=True, capture_output=True, text=True).stdout
        paths.update(p for p in out.splitlines() if p.startswith("/") and p != "/.")
    return sorted(paths)


def make_rootfs(root: Path, extra: tuple[str, ...] = ()) -> Path:
    """A merged-/usr root filesystem in ``root`` (created) of the packages ``package_closure`` names."""
    root.mkdir(parents=True)
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{link}")
    for path in _package_paths(package_closure(extra)):
        if not os.path.lexists(path):
            continue  # removed by a maintainer script or by hand
        dest = root / path.lstrip("/")
        if os.path.lexists(dest):
            continue  # a merged-/usr symlink, or the same file listed under /bin and /usr/bin
        dest.parent.mkdir(parents=True, exist_ok=True)
        if os.path.islink(path):
            os.symlink(os.readlink(path), dest)
        elif os.path.isdir(path):
            dest.mkdir()
            shutil.copystat(path, dest)
        elif os.path.isfile(path):
            shutil.copy2(path, dest)
    etc = root / "etc"
    for name in ("passwd", "group"):
        shutil.copyfile(f"/usr/share/base-passwd/{name}.master", etc / name)
    for d, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700), ("home", 0o755)):
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, mode)
    return root


def make_debian_rootfs(root: Path) -> Path:
    return make_rootfs(root)


def make_python_rootfs(root: Path) -> Path:
    return make_rootfs(root, PYTHON_PACKAGES)
