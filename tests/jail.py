"""Jail helpers for Kaniko-mode tests: the executor image's filesystem, assembled
from this machine's Python by ``docker/assemble_runtime.py`` (the step
``Dockerfile.executor`` runs), and a runner that starts ``/kaniko/executor``
chrooted there in a private mount and pid namespace, as a container would.

Also: a Debian-like base root filesystem made from this machine's own files,
and raw OCI layouts from hand-made tar layers (for hostile bases).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.buildkit import tree_of
from tests.fixtures.images import FIXED_MTIME, GROUP, PASSWD

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile.executor"
ASSEMBLE = ROOT / "docker" / "assemble_runtime.py"
PREFIX = "kaniko"


def executor_stage_config(dockerfile: Path = DOCKERFILE, stage: str = "executor") -> dict:
    """ENV, WORKDIR and ENTRYPOINT of ``stage`` and the stages it is built FROM, read from the
    Dockerfile itself, so the jail runs with exactly the image's settings."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=io.BytesIO(dockerfile.read_bytes()))
    stages: dict[str, dict] = {}
    current: dict | None = None
    for ins in parser.structure:
        kind, value = ins["instruction"], ins["value"]
        if kind == "FROM":
            words = value.split()
            parent = stages.get(words[0])
            current = {"env": dict(parent["env"]) if parent else {}, "workdir": parent["workdir"] if parent else "/",
                       "entrypoint": parent["entrypoint"] if parent else None}
            if len(words) == 3 and words[1].upper() == "AS":
                stages[words[2]] = current
        elif current is None:
            continue
        elif kind == "ENV":
            for item in value.split():
                key, _, val = item.partition("=")
                current["env"][key] = val
        elif kind == "WORKDIR":
            current["workdir"] = value
        elif kind == "ENTRYPOINT":
            current["entrypoint"] = json.loads(value)
    return stages[stage]


def assemble_executor_fs(jail: Path) -> Path:
    """``jail`` laid out as the executor image: /kaniko (the runtime), /workspace, and the
    mount points a container engine provides (/proc, /dev)."""
    subprocess.run([sys.executable, str(ASSEMBLE), str(jail / PREFIX), "--distribution", "pybuildless",
                    "--package-dir", str(ROOT / "pybuildless")], check=True, capture_output=True, timeout=300)
    for d in ("workspace", "proc", "dev"):
        (jail / d).mkdir(exist_ok=True)
    return jail


def copy_jail(master: Path, dest: Path) -> Path:
    """A private copy (not hard links: an overwrite in one must not reach the other)."""
    subprocess.run(["cp", "-a", str(master), str(dest)], check=True, timeout=120)
    return dest


@dataclass(frozen=True)
class JailRun:
    returncode: int
    stdout: str
    stderr: str


def run_in_jail(jail: Path, argv: list[str], *, env: dict[str, str] | None = None, timeout: int = 240) -> JailRun:
    """``argv`` chrooted into ``jail`` in new mount and pid namespaces, with /proc mounted
    for that pid namespace and /dev bound in — only inside the namespace, never on the host."""
    image = executor_stage_config()
    full_env = {**image["env"], **(env or {})}
    script = 'mount --rbind /dev "$0/dev" && cd "$0" && exec chroot "$0" "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", f"--mount-proc={jail}/proc",
         "/bin/sh", "-c", script, str(jail), *argv],
        env={**full_env, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"} if "PATH" not in full_env
        else {**full_env, "PATH": full_env["PATH"] + ":/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True, timeout=timeout, text=True, errors="replace")
    return JailRun(proc.returncode, proc.stdout, proc.stderr)


def prefix_tree(jail: Path) -> dict[str, tuple]:
    """Content, mode and owner of every file under the executor prefix."""
    return tree_of(jail / PREFIX)


# --- a Debian-like base from this machine's files ---------------------------------------------

DEBIAN_TOOLS = ("dash", "bash", "cat", "echo", "ls", "mkdir", "cp", "rm", "touch", "id", "uname", "env",
                "head", "grep", "sed", "ln", "chmod", "stat", "true", "false", "sort", "wc", "readlink")


def make_debian_like_rootfs(root: Path) -> Path:
    """Merged-/usr layout (``/bin -> usr/bin``...), dash as /bin/sh, coreutils and the
    glibc libraries ``ldd`` lists, /etc/os-release, passwd and group."""
    usr = root / "usr"
    for d in ("bin", "sbin", "lib/x86_64-linux-gnu", "lib64"):
        (usr / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{link}")
    libdir = usr / "lib" / "x86_64-linux-gnu"
    for tool in DEBIAN_TOOLS:
        src = shutil.which(tool, path="/usr/bin:/bin")
        if src is None:
            continue
        real = Path(os.path.realpath(src))
        shutil.copy2(real, usr / "bin" / tool)
        out = subprocess.run(["ldd", str(real)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts and parts[0].startswith("/") else None
            if path is None:
                continue
            dest = libdir / Path(path).name
            if not dest.exists():
                shutil.copy2(os.path.realpath(path), dest)
            if "ld-linux" in path:
                loader = usr / "lib64" / Path(path).name
                if not loader.is_symlink():
                    loader.symlink_to(f"../lib/x86_64-linux-gnu/{Path(path).name}")
    (usr / "bin" / "sh").symlink_to("dash")
    etc = root / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    (etc / "os-release").write_text('PRETTY_NAME="Debian-like test base"\nID=debian\nVERSION_CODENAME=bookworm\n')
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "root").mkdir(mode=0o700)
    (root / "var" / "tmp").mkdir(parents=True)
    return root


# --- raw OCI layouts from hand-made layers ----------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One tar member: kind is 'file', 'dir', 'symlink' or 'hardlink'."""
    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def tar_layer(entries: list[Entry]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mtime, info.mode = FIXED_MTIME, e.mode
            if e.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
                tar.addfile(info)
            elif e.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e.target
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return raw.getvalue()


def write_layers_layout(layout: Path, layers: list[bytes], *, tag: str = "latest",
                        env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)) -> Path:
    """An OCI layout with one gzip layer per uncompressed tar in ``layers``."""
    from pybuildless.image.descriptor import Platform

    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    descs, diff_ids = [], []
    for tar_bytes in layers:
        diff_ids.append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      **put(gzip.compress(tar_bytes, mtime=0))})
    platform = Platform.host()
    config = {"architecture": platform.architecture, "os": platform.os, "created": "2024-01-01T00:00:00Z",
              "config": {"Env": list(env), "Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **put(json.dumps(config).encode())},
                "layers": descs}
    mdesc = put(json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **mdesc,
                                                "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return layout


def rootfs_layer(root: Path) -> bytes:
    """The deterministic tar of a root filesystem directory (as the fixtures write it)."""
    from tests.fixtures.images import write_rootfs_tar

    raw = io.BytesIO()
    write_rootfs_tar(root, raw)
    return raw.getvalue()
