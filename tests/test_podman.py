"""A real container engine takes what pybuildless builds: podman loads the ``--tar-path`` tarball,
pulls the pushed image from the loopback registry, and runs both.

All podman state (storage, run root, locks, events, network configs, the OCI runtime's state)
lives in a temp dir; ``/etc/containers`` and ``/run`` are only read. Two things podman 4.3 has no
knob for as root: the blob-info cache in ``/var/lib/containers/cache`` (skopeo writes the same
file) and the scratch copy ``podman load`` unpacks an OCI archive into under ``/var/tmp`` (removed
when the load ends). Debian's crun refuses the hybrid cgroup layout and the default rlimits, so
containers run under runc with limits the machine allows, in a cgroup parent of their own that the
fixture removes afterwards.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.buildkit import executor, write_context

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds and podman's rootful mode need root"),
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
]

DOCKERFILE = """\
FROM {base}
ENV GREETING="hello from podman" APP_HOME=/srv/app
WORKDIR $APP_HOME
COPY --chmod=0755 greet.sh /usr/local/bin/greet
COPY --chown=user:user data/ ./data/
RUN echo "made by RUN as $(id -u)" > made.txt
USER user
ENTRYPOINT ["/usr/local/bin/greet"]
CMD ["--default-arg"]
"""

GREET = """\
#!/bin/sh
echo "args: $*"
echo "greeting: $GREETING"
echo "pwd: $(pwd)"
echo "ids: $(id -u):$(id -g)"
cat made.txt data/message.txt
"""


def expected_output(args: str) -> str:
    return (f"args: {args}\ngreeting: hello from podman\npwd: /srv/app\nids: 1000:1000\n"
            "made by RUN as 0\nfrom the context\n")


@dataclass(frozen=True)
class Built:
    ref: str  # 127.0.0.1:PORT/podman/app:1, pushed and the tarball's tag
    tarball: Path
    manifest_digest: str  # what was pushed (--digest-file)
    config_digest: str  # the config blob in the tarball


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, registry, busybox_image) -> Built:
    work = tmp_path_factory.mktemp("podman-build")
    ctx = write_context(work / "ctx", {
        "Dockerfile": DOCKERFILE.format(base=busybox_image),
        "greet.sh": GREET,
        "data/message.txt": "from the context\n",
    })
    ref = registry.ref("podman/app:1")
    tarball = work / "image.tar"
    executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", ref,
             "--tar-path", str(tarball), "--digest-file", str(work / "digest"), cwd=work)
    with tarfile.open(tarball) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
        config_blob = tar.extractfile(entry["Config"]).read()
    assert entry["RepoTags"] == [ref]
    return Built(ref, tarball, (work / "digest").read_text(), "sha256:" + hashlib.sha256(config_blob).hexdigest())


# --- podman with private state ------------------------------------------------


def mount_points() -> list[str]:
    """Mount points of this mount namespace (octal escapes such as ``\\040`` decoded)."""
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4].encode().decode("unicode_escape") for line in f]


def cgroup_roots() -> list[Path]:
    """Where the cgroup hierarchies (v1 controllers and the v2 tree) are mounted."""
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                roots.append(Path(fields[4]))
    return roots


def remove_cgroup_tree(parent: str) -> None:
    """rmdir ``parent`` (and the conmon/container groups below it) in every hierarchy.

    conmon may still be leaving its group when ``podman run --rm`` returns: retry while busy.
    """
    deadline = time.monotonic() + 20
    for root in cgroup_roots():
        top = root / parent.lstrip("/")
        if not top.is_dir():
            continue
        dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
        for d in dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


@dataclass(frozen=True)
class Podman:
    base: Path
    env: dict = field(repr=False)
    cgroup_parent: str

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["podman", "--root", str(self.base / "root"), "--runroot", str(self.base / "runroot"),
               "--storage-driver", "vfs", *args]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def inspect(self, image: str) -> dict:
        (info,) = json.loads(self("image", "inspect", image).stdout)
        return info

    def run(self, image: str, *args: str) -> subprocess.CompletedProcess:
        return self("run", "--rm", "--pull", "never", "--network", "none",
                    "--cgroup-parent", self.cgroup_parent, image, *args)


def _write_config(base: Path, runc: str) -> dict:
    etc = base / "etc"
    etc.mkdir()
    # A runtime entry named runc whose path is a wrapper: podman has no config knob for runtime
    # flags, and its cleanup process drops --runtime-flag, so the state dir goes in the wrapper.
    wrapper = base / "bin" / "runc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {runc} --root {base / "runc-state"} "$@"\n')
    wrapper.chmod(0o755)
    (etc / "containers.conf").write_text(f"""\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
cgroups = "enabled"
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
events_logfile_path = "{base / 'events.log'}"
tmp_dir = "{base / 'libpod-tmp'}"
# where pulls stage blobs (the default is /var/tmp)
image_copy_tmp_dir = "{base / 'tmp'}"
# file locks under tmp_dir instead of the shared /dev/shm/libpod_lock
lock_type = "file"
num_locks = 64

[engine.runtimes]
runc = ["{wrapper}"]

[network]
network_config_dir = "{base / 'networks'}"
""")
    (etc / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{base / "root"}"\nrunroot = "{base / "runroot"}"\n')
    (etc / "registries.conf").write_text("unqualified-search-registries = []\n")
    (etc / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    (etc / "auth.json").write_text('{"auths": {}}\n')
    for d in ("xdg-run", "xdg-config", "xdg-data", "home", "tmp"):
        (base / d).mkdir(mode=0o700)
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CONTAINERS_CONF": str(etc / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(etc / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(etc / "registries.conf"),
        "REGISTRY_AUTH_FILE": str(etc / "auth.json"),
        "XDG_RUNTIME_DIR": str(base / "xdg-run"),
        "XDG_CONFIG_HOME": str(base / "xdg-config"),
        "XDG_DATA_HOME": str(base / "xdg-data"),
        "HOME": str(base / "home"),
        "TMPDIR": str(base / "tmp"),
    }


@pytest.fixture
def podman() -> Iterator[Podman]:
    runc = shutil.which("runc")
    assert runc, "podman runs these containers with runc (Debian package runc)"
    # Not tmp_path: podman refuses a run root longer than 50 characters (conmon's socket paths).
    base = Path(tempfile.mkdtemp(prefix="pbl-podman-", dir="/tmp")).resolve()
    engine = Podman(base, _write_config(base, runc), f"/pybuildless-podman-test-{uuid.uuid4().hex[:12]}")
    try:
        yield engine
    finally:
        try:
            engine("system", "reset", "--force", check=False)
        finally:
            try:
                remove_cgroup_tree(engine.cgroup_parent)
            finally:
                release_temp_dir(base)


def release_temp_dir(base: Path) -> None:
    """Unmount whatever podman left mounted under ``base``, check nothing is, then delete it."""
    def under() -> list[str]:
        return [m for m in mount_points() if m == str(base) or m.startswith(f"{base}/")]

    for m in sorted(under(), key=len, reverse=True):
        subprocess.run(["umount", m], check=False)
    still = under()
    assert not still, f"mounts left under {base}: {still}"
    shutil.rmtree(base)  # only now: never delete through a mount


def signature_policy(engine: Podman) -> str:
    return f"--signature-policy={engine.base / 'etc' / 'policy.json'}"


def assert_config(info: dict, built: Built) -> None:
    assert "sha256:" + info["Id"] == built.config_digest
    config = info["Config"]
    assert config["Entrypoint"] == ["/usr/local/bin/greet"]
    assert config["Cmd"] == ["--default-arg"]
    assert config["WorkingDir"] == "/srv/app"
    assert config["User"] == "user"
    assert {"GREETING=hello from podman", "APP_HOME=/srv/app"} <= set(config["Env"])
    assert any(e.startswith("PATH=") for e in config["Env"])


# --- tests ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["load", "docker-archive"])
def test_podman_loads_and_runs_the_tarball(built: Built, podman: Podman, how: str) -> None:
    # The tarball is both a docker-save archive and an OCI layout: `podman load` reads it as an
    # OCI archive (index.json), the docker-archive transport reads manifest.json as `docker load` does.
    if how == "load":
        out = podman("load", signature_policy(podman), "--input", str(built.tarball)).stdout
        assert f"Loaded image: {built.ref}" in out
    else:
        out = podman("pull", signature_policy(podman), f"docker-archive:{built.tarball}").stdout
        assert out.strip() == built.config_digest.split(":", 1)[1]
    info = podman.inspect(built.ref)
    assert info["RepoTags"] == [built.ref]
    assert_config(info, built)

    assert podman.run(built.ref).stdout == expected_output("--default-arg")
    # arguments replace Cmd and still go to the Entrypoint
    assert podman.run(built.ref, "one", "two words").stdout == expected_output("one two words")


def test_podman_pulls_and_runs_the_pushed_image(built: Built, podman: Podman) -> None:
    # the pushed manifest names the same config blob as the tarball
    podman("pull", signature_policy(podman), "--tls-verify=false", f"docker://{built.ref}")
    info = podman.inspect(built.ref)
    assert_config(info, built)
    assert info["Digest"] == built.manifest_digest
    repo = built.ref.rsplit(":", 1)[0]
    assert f"{repo}@{built.manifest_digest}" in info["RepoDigests"]

    by_digest = f"{repo}@{built.manifest_digest}"
    assert podman.run(by_digest).stdout == expected_output("--default-arg")
