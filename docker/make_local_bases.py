#!/usr/bin/env python3
"""Base images for building Dockerfile.executor on a machine without a registry
mirror: root filesystem tarballs made from this machine's own files, for
``docker import`` (or ``podman import``).

  python-base.tar   glibc, dash as /bin/sh, coreutils, ldd, and this Python
                    (with pip) at its own prefix, linked from /usr/local/bin:
                    a stand-in for python:3.11-slim
  busybox-base.tar  a static busybox with its applets: a stand-in for busybox:musl

  python3 docker/make_local_bases.py OUTDIR
  docker import OUTDIR/python-base.tar local/python-base:3.11
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


def python_rootfs(root: Path) -> Path:
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
        if lib.name.split(".so")[0] in GLIBC_LIBS and not (root / "usr/lib/x86_64-linux-gnu" / lib.name).exists():
            shutil.copy2(lib, root / "usr/lib/x86_64-linux-gnu" / lib.name, follow_symlinks=False)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "etc/os-release").write_text('PRETTY_NAME="local python base"\nID=debian\n')
    if os.path.exists("/etc/ssl/certs/ca-certificates.crt"):
        (root / "etc/ssl/certs").mkdir(parents=True)
        shutil.copy2("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs")

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
    for name, make in (("python-base", python_rootfs), ("busybox-base", busybox_rootfs)):
        root = out / f"{name}.rootfs"
        shutil.rmtree(root, ignore_errors=True)
        tar_rootfs(make(root), out / f"{name}.tar")
        shutil.rmtree(root)
        print(out / f"{name}.tar")


if __name__ == "__main__":
    main()
