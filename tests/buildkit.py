"""Helpers for end-to-end build tests: run the executor, fetch and unpack what it pushed,
and run the image the way a container engine would (chroot with the image's config)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def executor(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True,
             stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run ``executor ARGS`` as a user would (a fresh process), capturing output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", "from pybuildless.cli import executor_main; executor_main()", *args],
        cwd=cwd, env=full_env, capture_output=True, input=stdin, timeout=300,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"executor failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout.decode(errors='replace')}\n"
                    f"STDERR:\n{proc.stderr.decode(errors='replace')}")
    return proc


def write_context(ctx: Path, files: dict[str, str | bytes]) -> Path:
    ctx.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return ctx


@dataclass
class Unpacked:
    rootfs: Path
    config: dict  # the image config (skopeo inspect --config)
    manifest: dict

    @property
    def container(self) -> dict:
        return self.config.get("config") or {}

    def run(self, *override_cmd: str, user: str | None = None) -> subprocess.CompletedProcess:
        """Run the image: Entrypoint + Cmd (or ``override_cmd``) chrooted into the rootfs."""
        c = self.container
        argv = list(c.get("Entrypoint") or []) + (list(override_cmd) or list(c.get("Cmd") or []))
        env = dict(item.split("=", 1) for item in c.get("Env") or [])
        uid, gid = _ids(self.rootfs, user or c.get("User") or "0")
        cwd = c.get("WorkingDir") or "/"
        script = 'cd "$1" && shift && exec "$@"'
        return subprocess.run(
            ["chroot", f"--userspec={uid}:{gid}", str(self.rootfs), "/bin/sh", "-c", script, "sh", cwd, *argv],
            env=env, capture_output=True, timeout=60,
        )

    def tree(self) -> dict[str, tuple]:
        return tree_of(self.rootfs)


def _ids(rootfs: Path, spec: str) -> tuple[int, int]:
    user, _, group = spec.partition(":")
    uid = gid = None
    passwd = rootfs / "etc/passwd"
    if user.isdigit():
        uid = int(user)
    if passwd.exists():
        for line in passwd.read_text().splitlines():
            f = line.split(":")
            if len(f) > 3 and (f[0] == user or f[2] == user):
                uid, gid = int(f[2]), int(f[3])
    if group:
        gid = int(group) if group.isdigit() else None
        for line in (rootfs / "etc/group").read_text().splitlines():
            f = line.split(":")
            if f[0] == group:
                gid = int(f[2])
    return uid or 0, gid or 0


def tree_of(root: Path) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, content sha or link target, nlink group key)."""
    import hashlib
    import stat

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = "/" + str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(p.read_bytes()).hexdigest()
                kind = "f"
            elif stat.S_ISLNK(st.st_mode):
                what, kind = os.readlink(p), "l"
            elif stat.S_ISDIR(st.st_mode):
                what, kind = "", "d"
            else:
                what, kind = str(st.st_rdev), "o"
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what)
    return out


def skopeo_inspect(ref: str, *extra: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
                         capture_output=True, check=True, timeout=60)
    return json.loads(out.stdout)


def unpack(source: str, work: Path) -> Unpacked:
    """``source``: ``docker://REF``, ``oci:DIR:TAG`` or ``docker-archive:FILE``. Copies it to an OCI
    layout with skopeo, then ``umoci unpack``s it: both tools must accept what we wrote."""
    layout = work / "layout"
    bundle = work / "bundle"
    work.mkdir(parents=True, exist_ok=True)
    argv = ["skopeo", "copy", "--src-tls-verify=false" if source.startswith("docker://") else "--quiet",
            "--dest-compress-format", "gzip", source, f"oci:{layout}:img"]
    for attempt in (1, 2):
        copy = subprocess.run(argv, capture_output=True, timeout=120)
        if copy.returncode == 0:
            break
        # Seen once on a loaded machine with several copies at a time; say why if it fails again.
        if attempt == 2:
            raise AssertionError(f"{' '.join(argv)} failed ({copy.returncode}):\n"
                                 f"{copy.stderr.decode(errors='replace')[-2000:]}")
        time.sleep(1)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:img", str(bundle)], check=True, capture_output=True,
                   timeout=120)
    index = json.loads((layout / "index.json").read_text())
    mdigest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs/sha256" / mdigest).read_text())
    config = json.loads((layout / "blobs/sha256" / manifest["config"]["digest"].split(":", 1)[1]).read_text())
    return Unpacked(bundle / "rootfs", config, manifest)
