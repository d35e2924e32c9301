#!/usr/bin/env python3
"""Base images for building Dockerfile.executor on a machine without a registry
mirror: root filesystem tarballs made from this machine's own files, for
``docker import`` (or ``podman import``).

  python-base.tar         glibc, dash as /bin/sh, coreutils, ldd, and this Python
                          (with pip) at its own prefix, linked from /usr/local/bin:
                          a stand-in for python:3.11-slim (run by Debian's own
                          /usr/bin/python3, the same as debian-python-base.tar)
  debian-python-base.tar  the same tools and Debian's own /usr/bin/python3 with its
                          layout: stdlib in /usr/lib/python3.X (EXTERNALLY-MANAGED
                          included), pip in /usr/lib/python3/dist-packages: a stand-in
                          for debian:bookworm + python3-pip (only when this machine's
                          /usr/bin/python3 is Debian's)
  busybox-base.tar        a static busybox with its applets: a stand-in for busybox:musl

  python3 docker/make_local_bases.py OUTDIR
  docker import OUTDIR/python-base.tar local/python-base:3.11
  docker import OUTDIR/debian-python-base.tar local/debian-python:bookworm
  docker import OUTDIR/busybox-base.tar local/busybox:static
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

TOOLS = ("dash", "bash", "ldd", "cat", "echo", "ls", "mkdir", "cp", "rm", "mv", "ln", "chmod", "touch", "env",
         "uname", "id", "head", "grep", "sed", "sort", "find", "xargs", "true", "false", "test", "readlink")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GLIBC_LIBS = {"libc", "libm", "libpthread", "libdl", "librt", "libresolv", "libutil", "libanl",
              "libnss_files", "libnss_dns", "libmvec", "libBrokenLocale", "libc_malloc_debug", "libthread_db"}
GROUP = "root:x:0:\nnogroup:x:65534:\n"
# Not glibc, but in every Debian image (libgcc-s1 is Priority: required): Rust and C++
# extension modules in wheels (dulwich's) link libgcc_s.
ESSENTIAL_LIBS = {"libgcc_s"}
DEBIAN_PYTHON = Path("/usr/bin/python3")
DEBIAN_DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")


def _copy_libs(binary: Path, root: Path) -> None:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts and parts[0].startswith("/") else None
        if path is None or not os.path.exists(path):
            continue
        dest = root / "usr/lib/x86_64-linux-gnu" / Path(path).name
        if not dest.exists():
            shutil.copy2(os.path.realpath(path), dest)
        if "ld-linux" in path and not (root / "usr/lib64" / Path(path).name).exists():
            (root / "usr/lib64" / Path(path).name).symlink_to(f"../lib/x86_64-linux-gnu/{Path(path).name}")


def _glibc_rootfs(root: Path) -> None:
    """What every glibc base here has: the usual tools, the C library, users, a CA bundle."""
    for d in ("usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/local/bin", "etc", "tmp",
              "root", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{link}")
    os.chmod(root / "tmp", 0o1777)
    for tool in TOOLS:
        src = shutil.which(tool, path="/usr/bin:/bin")
        if src:
            real = Path(os.path.realpath(src))
            shutil.copy2(real, root / "usr/bin" / tool)
            if real.read_bytes()[:4] == b"\x7fELF":
                _copy_libs(real, root)
    (root / "usr/bin/sh").symlink_to("dash")
    # The whole C library, as any glibc image has it (wheels link libpthread, libdl...).
    for lib in Path("/lib/x86_64-linux-gnu").glob("lib*.so*"):
        if (lib.name.split(".so")[0] in GLIBC_LIBS | ESSENTIAL_LIBS
                and not (root / "usr/lib/x86_64-linux-gnu" / lib.name).exists()):
            shutil.copy2(lib, root / "usr/lib/x86_64-linux-gnu" / lib.name, follow_symlinks=False)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "etc/os-release").write_text('PRETTY_NAME="local python base"\nID=debian\n')
    if os.path.exists("/etc/ssl/certs/ca-certificates.crt"):
        (root / "etc/ssl/certs").mkdir(parents=True)
        shutil.copy2("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs")


def python_rootfs(root: Path) -> Path:
    if Path(sys.base_prefix) == Path("/usr"):
        # Run by the distribution's own python3 (Debian's, at /usr): its layout is the base.
        return debian_python_rootfs(root)
    _glibc_rootfs(root)
    prefix = Path(sys.base_prefix)
    target = root / prefix.relative_to("/")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (target / "bin").mkdir(parents=True)
    (target / "lib").mkdir()
    shutil.copy2(os.path.realpath(sys.executable), target / "bin" / version)
    for lib in (prefix / "lib").glob("libpython*"):
        shutil.copy2(lib, target / "lib" / lib.name, follow_symlinks=False)
    stdlib = prefix / "lib" / version
    skip = {"site-packages", "test", "idlelib", "tkinter", "turtledemo"}
    shutil.copytree(stdlib, target / "lib" / version, symlinks=True,
                    ignore=lambda d, names: {n for n in names if Path(d) == stdlib and (n in skip or n.startswith("config-"))})
    site = target / "lib" / version / "site-packages"
    site.mkdir()
    for entry in (stdlib / "site-packages").iterdir():  # pip only: the Dockerfile installs the rest
        if entry.name.startswith("pip"):
            shutil.copytree(entry, site / entry.name, symlinks=True)
    _copy_libs(Path(os.path.realpath(sys.executable)), root)
    for so in (target / "lib" / version / "lib-dynload").glob("*.so"):
        if not so.name.startswith("_tkinter"):
            _copy_libs(so, root)
    for alias in ("python3", "python"):
        (root / "usr/local/bin" / alias).symlink_to(f"/{prefix.relative_to('/')}/bin/{version}")
    return root


def is_debian_python(python: Path = DEBIAN_PYTHON) -> bool:
    """``python`` has Debian's site rules: its own packages in /usr/lib/python3/dist-packages."""
    if not python.exists():
        return False
    out = subprocess.run([str(python), "-c", "import site; print(*site.getsitepackages(), sep='\\n')"],
                         capture_output=True, text=True).stdout.split()
    return str(DEBIAN_DIST_PACKAGES) in out and (DEBIAN_DIST_PACKAGES / "pip").is_dir()


def debian_python_rootfs(root: Path) -> Path:
    """Debian's python3 and python3-pip as bookworm installs them (from this machine's files)."""
    if not is_debian_python():
        raise SystemExit(f"{DEBIAN_PYTHON} is not Debian's python3 with python3-pip "
                         f"(no pip in {DEBIAN_DIST_PACKAGES}): apt-get install python3-pip")
    _glibc_rootfs(root)
    real = Path(os.path.realpath(DEBIAN_PYTHON))  # /usr/bin/python3.11
    version = real.name
    shutil.copy2(real, root / "usr/bin" / version)
    _copy_libs(real, root)
    (root / "usr/bin/python3").symlink_to(version)
    stdlib = Path("/usr/lib") / version
    skip = {"test", "idlelib", "tkinter", "turtledemo", "__pycache__"}
    shutil.copytree(stdlib, root / "usr/lib" / version, symlinks=True,
                    ignore=lambda d, names: {n for n in names if n == "__pycache__" or
                                             Path(d) == stdlib and (n in skip or n.startswith("config-"))})
    for so in (root / "usr/lib" / version / "lib-dynload").glob("*.so"):
        if so.name.startswith("_tkinter"):
            so.unlink()
        else:
            _copy_libs(Path(stdlib / "lib-dynload" / so.name), root)
    dist = root / DEBIAN_DIST_PACKAGES.relative_to("/")
    dist.mkdir(parents=True)
    for entry in DEBIAN_DIST_PACKAGES.iterdir():  # python3-pip only: the Dockerfile installs the rest
        if entry.name == "pip" or entry.name.startswith("pip-"):
            shutil.copytree(entry, dist / entry.name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
                                         'VERSION_ID="12"\n')
    return root


def busybox_rootfs(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    return root


def tar_rootfs(root: Path, dest: Path) -> None:
    with tarfile.open(dest, "w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    variants = [("python-base", python_rootfs), ("busybox-base", busybox_rootfs)]
    if is_debian_python():
        variants.append(("debian-python-base", debian_python_rootfs))
    else:
        print(f"skipped debian-python-base: {DEBIAN_PYTHON} is not Debian's python3 with python3-pip",
              file=sys.stderr)
    for name, make in variants:
        root = out / f"{name}.rootfs"
        shutil.rmtree(root, ignore_errors=True)
        tar_rootfs(make(root), out / f"{name}.tar")
        shutil.rmtree(root)
        print(out / f"{name}.tar")


if __name__ == "__main__":
    main()
