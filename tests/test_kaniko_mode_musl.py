"""Kaniko mode on a genuinely musl base, laid out as Alpine does.

The busybox fixture's root filesystem plus Debian's musl: the dynamic loader at
``/lib/ld-musl-x86_64.so.1`` as a real file (on Alpine the loader *is* libc;
Debian ships it as a symlink to ``/lib/x86_64-linux-musl/libc.so``, so the file
is copied, not the link), ``/lib/libc.musl-x86_64.so.1`` pointing at it, an
Alpine-like ``/etc/os-release``, no glibc, and ``/usr/bin/musl-hello``, a tiny
program built here with ``musl-gcc`` that needs the musl loader at run time.

``/kaniko/executor`` builds FROM that base in the jail (see ``tests/jail.py``):
RUN steps execute the program and busybox tools, a COPY brings in a context
file, and the pushed image is unpacked and run. Root only, like the other
Kaniko-mode tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.buildkit import skopeo_inspect, unpack
from tests.fixtures.images import push_layout, write_oci_layout
from tests.test_kaniko_mode import assert_ok, build_in_jail, executor_fs, jail  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and namespaces need root"),
]

MUSL_LOADER = "/lib/ld-musl-x86_64.so.1"
GLIBC_NAMES = re.compile(r"^(libc\.so\.6|ld-linux-x86-64\.so\.2|libc-2\.\d+\.so|ld-2\.\d+\.so|libpthread\.so\.0)$")

# Written to be unambiguous about which C library runs it: glibc answers
# _CS_GNU_LIBC_VERSION ("glibc 2.36"), musl knows no such name and fails with
# EINVAL. With --maps it lists the shared objects mapped into the process, so
# the test sees which file the kernel actually loaded as its interpreter.
MUSL_HELLO_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void print_mapped_objects(void)
{
    char line[4096], last[4096] = "";
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) {
        puts("mapped: unavailable");
        return;
    }
    while (fgets(line, sizeof line, maps)) {
        char *path = strchr(line, '/');
        if (!path || !strstr(path, ".so"))
            continue;
        path[strcspn(path, "\n")] = '\0';
        if (strcmp(path, last) != 0) {
            printf("mapped: %s\n", path);
            snprintf(last, sizeof last, "%s", path);
        }
    }
    fclose(maps);
}

int main(int argc, char **argv)
{
    char version[128];
    int maps = argc > 1 && strcmp(argv[1], "--maps") == 0;
    size_t n = confstr(_CS_GNU_LIBC_VERSION, version, sizeof version);

    fputs("musl-hello:", stdout);
    for (int i = 1 + maps; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\nlibc: %s\n", n ? version : "not glibc");
    if (maps)
        print_mapped_objects();
    return 0;
}
"""


def readelf(path: Path, flag: str) -> str:
    return subprocess.run(["readelf", flag, str(path)], capture_output=True, text=True, check=True).stdout


def elf_interpreter(path: Path) -> str | None:
    found = re.search(r"Requesting program interpreter: ([^\]]+)\]", readelf(path, "-l"))
    return found.group(1) if found else None


def elf_needed(path: Path) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf(path, "-d"))


def is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def glibc_traces(root: Path) -> list[str]:
    """Everything in ``root`` that would mean glibc is there: its shared objects or loader by
    name, a multiarch glibc library directory, or an ELF asking for another interpreter or
    library than musl's. (busybox is static, so it asks for none.)"""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = "/" + path.relative_to(root).as_posix()
            if GLIBC_NAMES.match(name) or name == "x86_64-linux-gnu":
                found.append(rel)
            elif path.is_file() and not path.is_symlink() and is_elf(path):
                interp = elf_interpreter(path)
                if interp not in (None, MUSL_LOADER):
                    found.append(f"{rel} (interpreter {interp})")
                found += [f"{rel} (needs {lib})" for lib in elf_needed(path) if lib != "libc.so"]
    return found


@pytest.fixture(scope="module")
def musl_hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``musl-hello`` compiled with ``musl-gcc``, dynamically linked against musl."""
    work = tmp_path_factory.mktemp("musl-hello")
    (work / "musl-hello.c").write_text(MUSL_HELLO_C)
    subprocess.run(["musl-gcc", "-O2", "-Wall", "-Werror", "-o", str(work / "musl-hello"), str(work / "musl-hello.c")],
                   check=True, capture_output=True, timeout=60)
    binary = work / "musl-hello"
    described = subprocess.run(["file", "-b", str(binary)], capture_output=True, text=True, check=True).stdout
    assert "dynamically linked" in described and f"interpreter {MUSL_LOADER}" in described, described
    assert elf_interpreter(binary) == MUSL_LOADER
    assert elf_needed(binary) == ["libc.so"]
    return binary


def make_musl_rootfs(busybox_rootfs: Path, root: Path, musl_hello: Path) -> Path:
    """The busybox fixture (copied: it is shared by the session) plus musl as Alpine lays it out."""
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(root)], check=True, timeout=60)
    lib = root / "lib"
    lib.mkdir(exist_ok=True)
    shutil.copy2(os.path.realpath(MUSL_LOADER), lib / "ld-musl-x86_64.so.1")
    os.chmod(lib / "ld-musl-x86_64.so.1", 0o755)
    (lib / "libc.musl-x86_64.so.1").symlink_to("ld-musl-x86_64.so.1")
    (root / "etc" / "os-release").write_text(
        'NAME="Alpine-like musl test base"\nID=alpine\nID_LIKE=alpine\n'
        'PRETTY_NAME="Alpine-like musl test base (busybox, musl)"\n')
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(musl_hello, root / "usr" / "bin" / "musl-hello")
    os.chmod(root / "usr" / "bin" / "musl-hello", 0o755)
    return root


@pytest.fixture(scope="module")
def musl_rootfs(busybox_rootfs: Path, musl_hello: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_musl_rootfs(busybox_rootfs, tmp_path_factory.mktemp("musl-base") / "rootfs", musl_hello)


@pytest.fixture(scope="module")
def musl_image(registry, musl_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    layout = write_oci_layout(musl_rootfs, tmp_path_factory.mktemp("musl-layout") / "layout")
    return push_layout(layout, registry, "base/musl-alpine-like:latest")


def test_the_base_is_musl_only(musl_rootfs: Path) -> None:
    loader = musl_rootfs / "lib" / "ld-musl-x86_64.so.1"
    assert loader.is_file() and not loader.is_symlink()
    assert os.readlink(musl_rootfs / "lib" / "libc.musl-x86_64.so.1") == "ld-musl-x86_64.so.1"
    assert not glibc_traces(musl_rootfs), glibc_traces(musl_rootfs)
    # The program runs there on musl's loader alone (the host's glibc is out of reach).
    run = subprocess.run(["chroot", str(musl_rootfs), "/usr/bin/musl-hello", "base", "check"],
                         capture_output=True, text=True, timeout=30)
    assert run.stdout == "musl-hello: base check\nlibc: not glibc\n", run.stderr


def test_musl_base_in_the_jail(jail: Path, registry, musl_image: str, musl_rootfs: Path, tmp_path: Path) -> None:
    dest = registry.ref("kaniko/musl:1")
    result = build_in_jail(jail, {"Dockerfile": (
        f"FROM {musl_image}\n"
        "COPY greeting.txt /etc/greeting.txt\n"
        "RUN mkdir -p /out && musl-hello --maps $(cat /etc/greeting.txt) > /out/hello.txt\n"
        f"RUN {MUSL_LOADER} --list /usr/bin/musl-hello > /out/ldd.txt 2>&1"
        " && sha256sum /usr/bin/musl-hello | cut -d' ' -f1 > /out/hello.sha256"
        " && sed -n 's/^ID=//p' /etc/os-release > /out/id"
        " && grep -c '^mapped: ' /out/hello.txt > /out/mapped-count\n"
        'CMD ["musl-hello", "from", "cmd"]\n'),
        "greeting.txt": "built in the jail\n"}, dest)
    assert_ok(result)

    manifest = skopeo_inspect(dest, "--raw")
    assert len(manifest["layers"]) == 4  # base + COPY + 2 RUN
    base_manifest = skopeo_inspect(musl_image, "--raw")
    assert manifest["layers"][0]["digest"] == base_manifest["layers"][0]["digest"]

    image = unpack(f"docker://{dest}", tmp_path / "unpacked")
    out = image.rootfs / "out"
    # RUN executed the musl program through the base's loader (the only shared object mapped),
    # not through the executor's glibc under /kaniko.
    assert (out / "hello.txt").read_text() == (
        "musl-hello: built in the jail\nlibc: not glibc\n"
        f"mapped: {MUSL_LOADER}\n")
    ldd = (out / "ldd.txt").read_text()
    assert re.search(r"libc\.so => /lib/ld-musl-x86_64\.so\.1 ", ldd) and "x86_64-linux-gnu" not in ldd, ldd
    # busybox tools saw the same program and the Alpine-like os-release.
    hello_sha = image.tree()["/usr/bin/musl-hello"][4]
    assert (out / "hello.sha256").read_text() == hello_sha + "\n"
    assert (out / "id").read_text() == "alpine\n"
    assert (out / "mapped-count").read_text() == "1\n"
    assert (image.rootfs / "etc/greeting.txt").read_text() == "built in the jail\n"

    # The pushed image runs (chrooted) on musl, and still holds no glibc.
    run = image.run()
    assert run.stdout == b"musl-hello: from cmd\nlibc: not glibc\n", run.stderr
    assert not glibc_traces(image.rootfs), glibc_traces(image.rootfs)
    tree = image.tree()
    assert not any(p.startswith(("/kaniko", "/workspace")) for p in tree)
    assert tree[MUSL_LOADER][0] == "f" and tree["/lib/libc.musl-x86_64.so.1"][4] == "ld-musl-x86_64.so.1"


def test_musl_program_needs_the_musl_base(jail: Path, registry, busybox_image: str, musl_hello: Path) -> None:
    # The same program COPYed onto the plain busybox base (no musl loader) cannot start:
    # what made the test above work is the base's /lib/ld-musl-x86_64.so.1.
    (jail / "workspace" / "musl-hello").write_bytes(musl_hello.read_bytes())
    os.chmod(jail / "workspace" / "musl-hello", 0o755)
    result = build_in_jail(jail, {"Dockerfile": (
        f"FROM {busybox_image}\n"
        "COPY musl-hello /usr/bin/musl-hello\n"
        "RUN musl-hello > /out.txt\n")}, registry.ref("kaniko/musl-on-busybox:1"))
    assert result.returncode == 127, f"{result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert "musl-hello: not found" in result.stdout + result.stderr, result.stderr
