"""More executor behaviour end to end: ONBUILD replay, ADD of a URL, --single-snapshot, --label,
tar:// contexts, reproducible digests, COPY --from an image and by index, symlinks in COPY."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import stat
import tarfile
import threading

import pytest

from tests import gitdaemon
from tests.buildkit import executor, unpack, write_context

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server over tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def build(tmp_path, registry, dockerfile, files=None, *args, repo):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, **(files or {})})
    ref = registry.ref(repo)
    proc = executor("-c", str(ctx), "-d", ref, *args, cwd=tmp_path)
    return ref, proc


def test_onbuild_triggers_replay_downstream(tmp_path, registry, busybox_image):
    parent, _ = build(tmp_path / "p", registry, f"FROM {busybox_image}\nONBUILD COPY marker.txt /from-trigger\n"
                      "ONBUILD RUN echo ran > /trigger-ran\n", {"marker.txt": "child context\n"}, repo="feat/onbuild-parent:1")
    child, _ = build(tmp_path / "c", registry, f"FROM {parent}\nRUN cat /from-trigger /trigger-ran > /both\n",
                     {"marker.txt": "child context\n"}, repo="feat/onbuild-child:1")
    image = unpack(f"docker://{child}", tmp_path / "u")
    assert (image.rootfs / "both").read_text() == "child context\nran\n"
    assert not image.container.get("OnBuild"), "triggers are not inherited by grandchildren"


def test_add_url_is_downloaded_with_mode_0600_and_checksum_checked(tmp_path, registry, busybox_image, http_server):
    www, url = http_server
    (www / "data.bin").write_bytes(b"payload\n")
    digest = hashlib.sha256(b"payload\n").hexdigest()
    ref, _ = build(tmp_path, registry, f"FROM {busybox_image}\nADD --checksum=sha256:{digest} {url}/data.bin /dl/\n"
                   f"ADD {url}/data.bin /renamed.bin\n", repo="feat/addurl:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    for path in ("dl/data.bin", "renamed.bin"):
        assert (image.rootfs / path).read_bytes() == b"payload\n"
        assert stat.S_IMODE((image.rootfs / path).stat().st_mode) == 0o600
    bad = write_context(tmp_path / "bad", {"Dockerfile": f"FROM {busybox_image}\nADD --checksum=sha256:{'0' * 64} {url}/data.bin /x\n"})
    proc = executor("-c", str(bad), "-d", registry.ref("feat/addurl:bad"), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and b"checksum mismatch" in proc.stderr


def test_single_snapshot_and_labels(tmp_path, registry, busybox_image):
    ref, _ = build(tmp_path, registry, f"FROM {busybox_image}\nRUN echo 1 > /one\nRUN echo 2 > /two\nCOPY f /f\n",
                   {"f": "f"}, "--single-snapshot", "--label", "team=build", "--label", "tier=1",
                   repo="feat/single:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    assert len(image.manifest["layers"]) == 2  # the base layer + one for the whole stage
    assert image.container["Labels"] == {"team": "build", "tier": "1"}
    assert (image.rootfs / "one").exists() and (image.rootfs / "two").exists() and (image.rootfs / "f").exists()
    assert sum(1 for h in image.config["history"] if not h.get("empty_layer")) == 2


def test_tar_context_from_file_and_stdin(tmp_path, registry, busybox_image):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in (("Dockerfile", f"FROM {busybox_image}\nCOPY app.txt /app.txt\n".encode()),
                           ("app.txt", b"from a tar context\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    (tmp_path / "ctx.tar.gz").write_bytes(buf.getvalue())
    ref = registry.ref("feat/tarctx:1")
    executor("-c", f"tar://{tmp_path / 'ctx.tar.gz'}", "-d", ref, cwd=tmp_path)
    assert (unpack(f"docker://{ref}", tmp_path / "u1").rootfs / "app.txt").read_text() == "from a tar context\n"
    ref2 = registry.ref("feat/tarctx:2")
    executor("-c", "tar://stdin", "-d", ref2, cwd=tmp_path, stdin=buf.getvalue())
    assert (unpack(f"docker://{ref2}", tmp_path / "u2").rootfs / "app.txt").read_text() == "from a tar context\n"


def test_reproducible_builds_give_identical_digests(tmp_path, registry, busybox_image):
    dockerfile = f"FROM {busybox_image}\nRUN echo stable > /s && mkdir /d && touch /d/x\nCOPY f /f\n"
    digests = []
    for n in range(2):
        ctx = write_context(tmp_path / f"ctx{n}", {"Dockerfile": dockerfile, "f": "same"})
        os.utime(ctx / "f", (1_000_000, 1_000_000))  # the same inputs; RUN's files get "now" each time
        executor("-c", str(ctx), "-d", registry.ref(f"feat/repro:{n}"), "--digest-file", str(tmp_path / f"d{n}"),
                 cwd=tmp_path, env={"SOURCE_DATE_EPOCH": "1700000000"})
        digests.append((tmp_path / f"d{n}").read_text())
    assert digests[0] == digests[1]
    image = unpack(f"docker://{registry.ref('feat/repro:0')}", tmp_path / "u")
    assert image.config["created"].startswith("2023-11-14T22:13:20")
    assert (image.rootfs / "f").stat().st_mtime == 1_000_000
    assert (image.rootfs / "s").stat().st_mtime == 1700000000  # clamped


def test_copy_from_image_index_and_symlinks(tmp_path, registry, busybox_image):
    dockerfile = f"""\
FROM {busybox_image} AS first
RUN mkdir -p /data/sub && echo real > /data/sub/file && ln -s sub/file /data/link && ln -s /data/sub /data/abs
FROM {busybox_image}
COPY --from=0 /data /copied
COPY --from=0 /data/link /followed
COPY --from={busybox_image} /bin/busybox /bb
"""
    ref, _ = build(tmp_path, registry, dockerfile, repo="feat/copyfrom:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    assert os.readlink(image.rootfs / "copied/link") == "sub/file"
    assert os.readlink(image.rootfs / "copied/abs") == "/data/sub"
    followed = image.rootfs / "followed"
    assert not followed.is_symlink() and followed.read_text() == "real\n"
    assert (image.rootfs / "bb").read_bytes() == (image.rootfs / "bin/busybox").read_bytes()


def test_zstd_layers_use_oci_media_types(tmp_path, registry, busybox_image):
    ref, _ = build(tmp_path, registry, f"FROM {busybox_image}\nRUN echo z > /z\n", None, "--compression", "zstd",
                   repo="feat/zstd:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")  # skopeo recompresses to gzip for umoci
    assert (image.rootfs / "z").read_text() == "z\n"
    raw = __import__("json").loads(__import__("subprocess").run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], capture_output=True, check=True).stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert raw["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"


@pytest.fixture
def git_daemon(tmp_path):
    import subprocess

    base = tmp_path / "git"
    repo = base / "repo.git"
    work = tmp_path / "gitwork"
    work.mkdir(parents=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    run = lambda *a, cwd=work: subprocess.run(["git", *a], cwd=cwd, check=True, capture_output=True, env=env)
    run("init", "-q", "-b", "main")
    (work / "sub").mkdir()
    (work / "sub/tool.sh").write_text("#!/bin/sh\necho tool\n")
    os.chmod(work / "sub/tool.sh", 0o775)
    (work / "README").write_text("v1\n")
    run("add", "-A")
    run("commit", "-q", "-m", "one")
    run("tag", "v1")
    (work / "README").write_text("v2\n")
    run("commit", "-q", "-am", "two")
    run("clone", "-q", "--bare", str(work), str(repo), cwd=tmp_path)
    commit_v1 = subprocess.run(["git", "rev-parse", "v1"], cwd=work, capture_output=True, text=True).stdout.strip()
    with gitdaemon.serving(base) as port:
        yield f"git://127.0.0.1:{port}/repo.git", commit_v1


def test_add_git_repository(tmp_path, registry, busybox_image, git_daemon):
    url, commit_v1 = git_daemon
    dockerfile = (f"FROM {busybox_image}\nADD {url} /src/\nADD --checksum={commit_v1[:12]} {url}#v1 /v1/\n"
                  f"ADD {url}#main:sub /tools/\n")
    ref, _ = build(tmp_path, registry, dockerfile, repo="feat/git:1")
    r = unpack(f"docker://{ref}", tmp_path / "u").rootfs
    assert (r / "src/README").read_text() == "v2\n" and not (r / "src/.git").exists()
    assert (r / "v1/README").read_text() == "v1\n"
    assert stat.S_IMODE((r / "tools/tool.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((r / "src/README").stat().st_mode) == 0o644
    bad = write_context(tmp_path / "bad", {"Dockerfile": f"FROM {busybox_image}\nADD --checksum=deadbeef {url}#v1 /x/\n"})
    proc = executor("-c", str(bad), "-d", registry.ref("feat/git:bad"), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and b"checksum mismatch" in proc.stderr


def test_copy_link_parents_and_exclude(tmp_path, registry, busybox_image):
    dockerfile = f"""\
FROM {busybox_image}
RUN mkdir -p /opt && chmod 0700 /opt && ln -s /opt /optlink
COPY --link app/ /opt/app/
COPY --parents ./src/./pkg/*.py /parents/
COPY --parents src/pkg/mod.py /keep-full/
COPY --exclude=*.log --exclude=cache logs/ /logs/
"""
    files = {"app/main.txt": "main", "src/pkg/mod.py": "m", "src/pkg/other.py": "o", "src/pkg/data.txt": "d",
             "logs/keep.txt": "k", "logs/drop.log": "x", "logs/cache/f": "c", "logs/sub/drop.log": "y"}
    ref, _ = build(tmp_path, registry, dockerfile, files, repo="feat/link:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    r = image.rootfs
    assert (r / "opt/app/main.txt").read_text() == "main"
    # BuildKit's --link rule: parent directories come from the copy's own layer, not the stage's
    assert stat.S_IMODE((r / "opt").stat().st_mode) == 0o755
    assert sorted(os.listdir(r / "parents/pkg")) == ["mod.py", "other.py"]
    assert (r / "keep-full/src/pkg/mod.py").read_text() == "m"
    assert sorted(str(p.relative_to(r / "logs")) for p in (r / "logs").rglob("*")) == ["keep.txt", "sub", "sub/drop.log"]  # *.log matches at the top only
