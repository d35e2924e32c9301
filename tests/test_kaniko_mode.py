"""Kaniko mode end to end: the executor image's filesystem (``/kaniko`` only, as
``Dockerfile.executor`` lays it out) in a jail, ``/kaniko/executor`` building
in place on the jail's ``/`` from a Debian-like, a busybox and an empty base,
and hostile bases that try to reach the executor's prefix.

Root only: chroot and mount/pid namespaces (``unshare``), all in temp dirs.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.buildkit import skopeo_inspect, unpack
from tests.fixtures.images import push_layout, write_oci_layout
from tests.jail import (
    Entry, JailRun, assemble_executor_fs, copy_jail, executor_stage_config, make_debian_like_rootfs, prefix_tree,
    rootfs_layer, run_in_jail, tar_layer, write_layers_layout,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and namespaces need root"),
]


@pytest.fixture(scope="module")
def executor_fs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return assemble_executor_fs(tmp_path_factory.mktemp("executor-fs") / "jail")


@pytest.fixture
def jail(executor_fs: Path, tmp_path: Path) -> Path:
    return copy_jail(executor_fs, tmp_path / "jail")


@pytest.fixture(scope="module")
def debian_image(registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("debian-like")
    rootfs = make_debian_like_rootfs(work / "rootfs")
    return push_layout(write_oci_layout(rootfs, work / "layout"), registry, "base/debian-like:latest")


def build_in_jail(jail: Path, files: dict[str, str], destination: str, *extra: str):
    """Write the context to <jail>/workspace and run the executor there; returns the run
    and asserts the executor prefix is byte-for-byte what it was."""
    for name, text in files.items():
        (jail / "workspace" / name).write_text(text)
    before = prefix_tree(jail)
    result = run_in_jail(jail, ["/kaniko/executor", "--context", "dir:///workspace", "--destination", destination,
                                *extra])
    after = prefix_tree(jail)
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, f"the executor prefix changed: {changed[:10]}"
    return result


def assert_ok(result) -> None:
    assert result.returncode == 0, f"executor failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"


def test_runtime_imports_everything_with_nothing_but_the_prefix(jail: Path) -> None:
    # Extension modules are loaded lazily, after / has been replaced: they must
    # resolve their libraries inside /kaniko only (the jail has no /lib, /usr).
    assert sorted(p.name for p in jail.iterdir()) == ["dev", "kaniko", "proc", "workspace"]
    code = ("import ssl, lzma, bz2, zlib, ctypes, hashlib, json, isal.isal_zlib, zstandard, requests, "
            "pybuildless.cli, sys; print(sys.prefix, ssl.OPENSSL_VERSION.split()[0])")
    result = run_in_jail(jail, ["/kaniko/bin/python3", "-IB", "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/kaniko", "OpenSSL"]


def test_debian_like_base(jail: Path, registry, debian_image: str, tmp_path: Path) -> None:
    dest = registry.ref("kaniko/debian:1")
    result = build_in_jail(jail, {"Dockerfile": (
        f"FROM {debian_image}\n"
        "RUN echo built-on-$(head -1 /etc/os-release | cut -d= -f2 2>/dev/null || echo x) > /built\n"
        "RUN mkdir -p /app && echo hello from dash > /app/msg && ls /kaniko > /app/kaniko-visible\n"
        "COPY note.txt /app/note.txt\n"
        'CMD ["/bin/cat", "/app/msg"]\n'),
        "note.txt": "a note\n"}, dest)
    assert_ok(result)
    manifest = skopeo_inspect(dest, "--raw")
    assert len(manifest["layers"]) == 4  # base + 2 RUN + COPY
    image = unpack(f"docker://{dest}", tmp_path / "unpacked")
    assert image.run().stdout == b"hello from dash\n"
    tree = image.tree()
    assert "/app/note.txt" in tree and "/usr/bin/dash" in tree and tree["/bin"][0] == "l"
    # The executor's own files are never part of the image, nor the context.
    assert not any(p.startswith(("/kaniko", "/workspace", "/proc/", "/dev/")) for p in tree), \
        sorted(p for p in tree if p.startswith(("/kaniko", "/workspace")))
    # RUN saw the executor prefix, as Kaniko's RUN does, without snapshotting it.
    assert b"executor" in (image.rootfs / "app/kaniko-visible").read_bytes()
    # Nothing of the build is left in the scratch area.
    assert not [p for p in (jail / "kaniko").iterdir() if p.name.startswith("pybuildless-")]


def test_busybox_base(jail: Path, registry, busybox_image: str, tmp_path: Path) -> None:
    dest = registry.ref("kaniko/busybox:1")
    result = build_in_jail(jail, {"Dockerfile": (
        f"FROM {busybox_image}\n"
        "RUN adduser_line='app:x:1001:1001::/home/app:/bin/sh' && echo \"$adduser_line\" >> /etc/passwd\n"
        "RUN mkdir -p /home/app && chown 1001 /home/app && echo musl-side > /home/app/x\n"
        "USER app\n"
        'CMD ["sh", "-c", "id -u; cat /home/app/x"]\n')}, dest)
    assert_ok(result)
    image = unpack(f"docker://{dest}", tmp_path / "unpacked")
    run = image.run()
    assert run.stdout == b"1001\nmusl-side\n", run.stderr
    assert image.tree()["/home/app"][2] == 1001


def test_multi_stage_with_copy_from(jail: Path, registry, busybox_image: str, debian_image: str,
                                    tmp_path: Path) -> None:
    dest = registry.ref("kaniko/multi:1")
    result = build_in_jail(jail, {"Dockerfile": (
        f"FROM {debian_image} AS builder\n"
        "RUN mkdir /out && echo artifact-from-debian > /out/artifact && cp /usr/bin/dash /out/dash-copy\n"
        "FROM scratch AS empty\n"
        "COPY --from=builder /out/artifact /only\n"
        f"FROM {busybox_image}\n"
        "COPY --from=builder /out/artifact /artifact\n"
        "COPY --from=empty /only /from-empty\n"
        "RUN cat /artifact /from-empty > /both\n"
        'CMD ["cat", "/both"]\n')}, dest)
    assert_ok(result)
    image = unpack(f"docker://{dest}", tmp_path / "unpacked")
    assert image.run().stdout == b"artifact-from-debian\nartifact-from-debian\n"
    tree = image.tree()
    # The final stage starts from a wiped /: nothing of the Debian-like stage leaks in.
    assert "/usr/bin/dash" not in tree and "/out" not in tree and "/etc/os-release" not in tree
    assert "/bin/busybox" in tree


def test_cleanup_leaves_only_the_protected_paths(jail: Path, registry, debian_image: str) -> None:
    result = build_in_jail(jail, {"Dockerfile": f"FROM {debian_image}\nRUN echo x > /x\n"},
                           registry.ref("kaniko/cleanup:1"), "--cleanup")
    assert_ok(result)
    assert sorted(p.name for p in jail.iterdir()) == ["dev", "kaniko", "proc", "workspace"]


# --- hostile bases -----------------------------------------------------------------------------

PWNED = b"#!/bin/sh\necho pwned\n"
HOSTILE_LAYERS = {
    "dotdot": [Entry("../kaniko/executor", data=PWNED, mode=0o755), Entry("a/../../kaniko/bin/evil", data=PWNED)],
    "dotdot-absolute": [Entry("/kaniko/executor", data=PWNED, mode=0o755)],
    "symlink-prefix": [Entry("kaniko", "symlink", target="/tmp/x"), Entry("kaniko/executor", data=PWNED)],
    "symlink-through": [Entry("x", "symlink", target="/kaniko"), Entry("x/executor", data=PWNED, mode=0o755),
                        Entry("y", "symlink", target="../kaniko/bin"), Entry("y/python3", data=PWNED)],
    "hardlink-then-write": [Entry("h", "hardlink", target="kaniko/executor"), Entry("h", data=PWNED)],
    "whiteout-prefix": [Entry(".wh.kaniko")],
    "opaque-root": [Entry(".wh..wh..opq"), Entry("marker", data=b"after opaque\n")],
}


def layer_names(layout: Path, descriptor: dict) -> list[str]:
    blob = layout / "blobs" / "sha256" / descriptor["digest"].split(":", 1)[1]
    with tarfile.open(blob, "r:*") as tar:
        return tar.getnames()


@pytest.fixture(scope="module")
def busybox_layer(busybox_rootfs: Path) -> bytes:
    return rootfs_layer(busybox_rootfs)


@pytest.mark.parametrize("attack", sorted(HOSTILE_LAYERS))
def test_hostile_base_cannot_touch_the_prefix(attack: str, jail: Path, registry, busybox_layer: bytes,
                                             tmp_path: Path) -> None:
    layout = write_layers_layout(tmp_path / "layout", [busybox_layer, tar_layer(HOSTILE_LAYERS[attack])])
    base = push_layout(layout, registry, f"hostile/{attack}:latest")
    dest = registry.ref(f"kaniko/hostile-{attack}:1")
    result = build_in_jail(jail, {"Dockerfile": f"FROM {base}\nRUN echo still-building > /proof\n"}, dest)
    # Either the build refuses the layer with a clear message, or it goes on safely.
    if result.returncode != 0:
        assert "Traceback" not in result.stderr, result.stderr
        assert "error" in result.stderr.lower(), result.stderr
    else:
        image = unpack(f"docker://{dest}", tmp_path / "unpacked")
        assert (image.rootfs / "proof").read_text() == "still-building\n"
        # Base layers are carried over verbatim (whatever they hold); what the build
        # added must not include anything of the executor's prefix.
        assert len(image.manifest["layers"]) == 3
        added = layer_names(tmp_path / "unpacked" / "layout", image.manifest["layers"][-1])
        assert "proof" in added and not [n for n in added if n.lstrip("./").startswith("kaniko")], added
    # The prefix is intact (checked by build_in_jail) and the executor still works.
    again = run_in_jail(jail, ["/kaniko/executor", "--help"])
    assert again.returncode == 0 and "Usage" in again.stdout, again.stderr
    assert not list((jail / "tmp").glob("x*")) if (jail / "tmp").is_dir() else True


# --- the prefix hidden from RUN steps -----------------------------------------------------------

# Each RUN tries one way to the credentials and records what it got; `|| true` keeps the build going.
LEAK_DOCKERFILE = """\
FROM {base}
RUN cat /kaniko/.docker/config.json > /leak-direct 2>/dev/null || true
RUN ls -A /kaniko > /kaniko-listing 2>/dev/null || true
RUN cat /proc/1/root/kaniko/.docker/config.json > /leak-proc-root 2>/dev/null || true
RUN for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; done | tr '\\0' '\\n' > /leak-proc-env; true
RUN unshare -r -m sh -c 'umount -l /kaniko; cat /kaniko/.docker/config.json' > /leak-unshare 2>/dev/null || true
RUN umount -l /kaniko 2>/dev/null; cat /kaniko/.docker/config.json > /leak-umount 2>/dev/null || true
RUN echo built > /built
"""
LEAK_FILES = ("leak-direct", "kaniko-listing", "leak-proc-root", "leak-unshare", "leak-umount")
FLAG_SECRET = "flag-s3cret-value"  # on the executor's command line only


def run_in_mounted_jail(jail: Path, argv: list[str], *, env: dict[str, str] | None = None) -> JailRun:
    """Like ``run_in_jail``, with the jail bound onto itself first, so that its ``/`` is a mount
    point as a container runtime's is: the executor can then make its mounts private and give
    steps their own mount namespace."""
    image = executor_stage_config()
    full_env = {**image["env"], **(env or {}), "PATH": image["env"].get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin"}
    script = 'mount --rbind "$0" "$0" && mount --rbind /dev "$0/dev" && cd "$0" && exec chroot "$0" "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", f"--mount-proc={jail}/proc",
         "/bin/sh", "-c", script, str(jail), *argv],
        env=full_env, capture_output=True, timeout=240, text=True, errors="replace")
    return JailRun(proc.returncode, proc.stdout, proc.stderr)


def test_prefix_hidden_from_run_with_a_mount_namespace(jail: Path, registry_basic, busybox_image: str,
                                                       tmp_path: Path) -> None:
    """Root with CAP_SYS_ADMIN (a privileged container): each step gets a private mount namespace
    with /kaniko covered and no CAP_SYS_ADMIN to uncover it; the push needs the credentials."""
    auth = base64.b64encode(f"{registry_basic.username}:{registry_basic.password}".encode())
    (jail / "kaniko/.docker").mkdir(exist_ok=True)
    (jail / "kaniko/.docker/config.json").write_text(
        json.dumps({"auths": {registry_basic.host: {"auth": auth.decode()}}}))
    (jail / "workspace/Dockerfile").write_text(LEAK_DOCKERFILE.format(base=busybox_image))
    dest = registry_basic.ref("kaniko/hidden:1")
    before = prefix_tree(jail)
    result = run_in_mounted_jail(jail, ["/kaniko/executor", "--context", "dir:///workspace", "--destination", dest,
                                        "--build-arg", f"UNUSED={FLAG_SECRET}"])
    assert_ok(result)
    assert prefix_tree(jail) == before
    assert "RUN steps can read" not in result.stderr
    layout = tmp_path / "pulled"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", registry_basic.creds,
                    f"docker://{dest}", f"oci:{layout}:img"], check=True, capture_output=True, timeout=120)
    blobs = [gzip.decompress(b.read_bytes()) if b.read_bytes()[:2] == b"\x1f\x8b" else b.read_bytes()
             for b in (layout / "blobs/sha256").iterdir()]
    files = {}
    for data in blobs:
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        files[member.name.lstrip("./")] = tar.extractfile(member).read()
        except tarfile.TarError:
            continue
    assert files["built"] == b"built\n"
    assert {name: files[name] for name in LEAK_FILES} == {name: b"" for name in LEAK_FILES}
    # a pid namespace: the steps saw only their own processes, none with the flag's value
    assert FLAG_SECRET.encode() not in files["leak-proc-env"]
    everything = b"".join(blobs)
    assert auth not in everything and registry_basic.password.encode() not in everything
