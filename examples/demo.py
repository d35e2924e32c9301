#!/usr/bin/env python3
"""`make demo`: the main job end to end, on loopback only.

1. start Debian's docker-registry on a free loopback port (temp config and storage);
2. make a busybox base image with pybuildless itself (FROM scratch + ADD of a rootfs tar) and push it;
3. build examples/hello (multi-stage: RUN, COPY --from, USER, ENTRYPOINT) and push it;
4. pull it back with `pybuildless pull`, unpack it, and run it (chroot into its rootfs with the image's
   Entrypoint, Cmd, Env, WorkingDir and User), printing its output.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (work / "registry").mkdir()
    config = work / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work / 'registry'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(work / "registry.log", "wb"))
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"docker-registry did not start; see {work / 'registry.log'}")


def busybox_rootfs_tar(dest: Path) -> None:
    """A busybox rootfs (from Debian's busybox-static) as a tar, for `ADD busybox.tar /`."""
    busybox = Path("/bin/busybox")
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    with tarfile.open(dest, "w") as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "var"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", busybox.read_bytes(), 0o755)
        for applet in sorted(set(applets)):
            if applet == "bin/busybox" or applet.count("/") == 0:
                continue
            info = tarfile.TarInfo(applet)
            info.type, info.linkname = tarfile.SYMTYPE, "/bin/busybox"
            tar.addfile(info)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")


def executor(*args: str) -> None:
    cmd = [sys.executable, "-m", "pybuildless", "build", *args]
    print("$ executor " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def run_image(layout: Path, work: Path) -> str:
    bundle = work / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:1.0", str(bundle)], check=True,
                   capture_output=True)
    runtime = json.loads((bundle / "config.json").read_text())
    process = runtime["process"]
    env = dict(e.split("=", 1) for e in process["env"])
    uid, gid = process["user"]["uid"], process["user"]["gid"]
    script = 'cd "$1" && shift && exec "$@"'
    argv = ["chroot", f"--userspec={uid}:{gid}", str(bundle / "rootfs"), "/bin/sh", "-c", script, "sh",
            process.get("cwd", "/"), *process["args"]]
    print("$ " + " ".join(argv[:3]) + " " + " ".join(process["args"]), flush=True)
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("make demo needs root (RUN steps are chrooted into the stage root)")
    work = Path(tempfile.mkdtemp(prefix="pybuildless-demo-"))
    registry, host = start_registry(work)
    try:
        say(f"local registry on {host}")
        base_ctx = work / "base"
        base_ctx.mkdir()
        busybox_rootfs_tar(base_ctx / "busybox.tar")
        (base_ctx / "Dockerfile").write_text('FROM scratch\nADD busybox.tar /\nCMD ["sh"]\n')
        say("building the busybox base image with pybuildless (FROM scratch + ADD rootfs.tar)")
        executor("--context", str(base_ctx), "--destination", f"{host}/demo/busybox:latest")
        say("building examples/hello (multi-stage, RUN, COPY --from, USER, ENTRYPOINT) and pushing it")
        executor("--context", str(HERE / "hello"), "--dockerfile", str(HERE / "hello" / "Dockerfile"),
                 "--build-arg", f"BASE={host}/demo/busybox:latest", "--destination", f"{host}/demo/hello:1.0",
                 "--digest-file", str(work / "digest"))
        digest = (work / "digest").read_text()
        say(f"pushed {host}/demo/hello:1.0@{digest}; pulling it back with `pybuildless pull`")
        layout = work / "pulled"
        subprocess.run([sys.executable, "-m", "pybuildless", "pull", f"{host}/demo/hello:1.0", str(layout)],
                       check=True, cwd=ROOT)
        say("running the image (chroot into its rootfs with its Entrypoint, Cmd, Env, WorkingDir and User)")
        print(run_image(layout, work), end="", flush=True)
        say("demo finished")
    finally:
        registry.terminate()
        registry.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
