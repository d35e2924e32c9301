"""Kaniko's remote context sources against real servers on loopback.

git://: ``git http-backend`` (git's own smart-HTTP server) behind a small HTTP
server in this file. Kaniko always clones git:// over https unless
``GIT_PULL_METHOD=http`` (pkg/buildcontext/git.go), so the tests set that,
explicitly, to reach the plain-HTTP server; one test shows the https default.

s3://: moto's standalone S3 server, reached through Kaniko's ``S3_ENDPOINT`` and
``S3_FORCE_PATH_STYLE`` (pkg/buildcontext/s3.go) or boto3's own ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pybuildless.builder.context import open_context
from pybuildless.builder.options import GitOptions
from pybuildless.errors import UsageError
from tests.buildkit import executor, unpack
from tests.fixtures.registry import free_port

ROOT = Path(__file__).resolve().parent.parent


# -- a smart-HTTP git server ------------------------------------------------------------

class _GitHandler(BaseHTTPRequestHandler):
    root: Path
    protected: str = "/private/"
    credentials = ("gituser", "gitpass")

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        if path.startswith(self.protected):
            expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
               "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_ADDR": "127.0.0.1",
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "PATH": os.environ["PATH"],
               "HOME": str(self.root), "GIT_CONFIG_NOSYSTEM": "1"}
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _git(*args: str, cwd: Path) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_ALLOW_PROTOCOL": "file:http"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def git_server(tmp_path_factory, busybox_image):
    base = tmp_path_factory.mktemp("git")
    root = base / "srv"
    root.mkdir()
    port = free_port()
    host = f"127.0.0.1:{port}"
    # the submodule
    lib = base / "lib"
    lib.mkdir()
    _git("init", "-q", "-b", "main", cwd=lib)
    (lib / "lib.txt").write_text("from the submodule\n")
    _git("add", "-A", cwd=lib)
    _git("commit", "-q", "-m", "lib", cwd=lib)
    _git("clone", "-q", "--bare", str(lib), str(root / "org/lib.git"), cwd=base)
    handler = type("Handler", (_GitHandler,), {"root": root})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()  # `submodule add` clones from it
    # the application: main (v1, then v2), an annotated tag v1, a branch feature
    work = base / "app"
    work.mkdir()
    _git("init", "-q", "-b", "main", cwd=work)
    (work / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY hello.txt /hello.txt\n")
    (work / "hello.txt").write_text("v1\n")
    (work / "sub").mkdir()
    (work / "sub/Dockerfile").write_text(f"FROM {busybox_image}\nCOPY sub.txt /sub.txt\nRUN cat /sub.txt\n")
    (work / "sub/sub.txt").write_text("in the sub path\n")
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "one", cwd=work)
    _git("tag", "-a", "v1", "-m", "release 1", cwd=work)
    v1 = _git("rev-parse", "HEAD", cwd=work)
    _git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "hello.txt").write_text("feature\n")
    _git("commit", "-q", "-am", "feature", cwd=work)
    feature = _git("rev-parse", "HEAD", cwd=work)
    _git("checkout", "-q", "main", cwd=work)
    (work / "hello.txt").write_text("v2\n")
    _git("-c", "protocol.file.allow=always", "submodule", "add", "-q", f"http://{host}/org/lib.git", "lib", cwd=work)
    _git("commit", "-q", "-am", "two", cwd=work)
    v2 = _git("rev-parse", "HEAD", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(root / "org/app.git"), cwd=base)
    _git("clone", "-q", "--bare", str(work), str(root / "private/app.git"), cwd=base)
    yield {"host": host, "v1": v1, "v2": v2, "feature": feature}
    server.shutdown()
    server.server_close()


@pytest.fixture
def plain_http(monkeypatch):
    # Kaniko's own switch for git contexts over plain HTTP (the loopback server has no TLS)
    monkeypatch.setenv("GIT_PULL_METHOD", "http")
    for name in ("GIT_USERNAME", "GIT_PASSWORD", "GIT_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def _open(spec: str, tmp_path: Path, **git) -> Path:
    context = open_context(spec, workdir=tmp_path / "w", git=GitOptions(**git))
    return context.root


@pytest.mark.parametrize("suffix, git, hello", [
    ("", {}, "v2\n"),
    ("#refs/heads/feature", {}, "feature\n"),
    ("#refs/tags/v1", {}, "v1\n"),
    ("#feature", {}, "feature\n"),  # a short branch name, read as refs/heads/feature
    ("", {"branch": "feature"}, "feature\n"),
    ("", {"branch": "v1"}, "v1\n"),  # --git branch= falls back to a tag, as Kaniko does
    ("", {"branch": "feature", "single_branch": True}, "feature\n"),
])
def test_git_context_refs(git_server, plain_http, tmp_path, suffix, git, hello):
    root = _open(f"git://{git_server['host']}/org/app.git{suffix}", tmp_path, **git)
    assert (root / "hello.txt").read_text() == hello


def test_git_context_commit_forms(git_server, plain_http, tmp_path):
    host, v1 = git_server["host"], git_server["v1"]
    assert (_open(f"git://{host}/org/app.git#{v1}", tmp_path / "a") / "hello.txt").read_text() == "v1\n"
    root = _open(f"git://{host}/org/app.git#refs/heads/main#{v1}", tmp_path / "b")
    assert (root / "hello.txt").read_text() == "v1\n"


def test_git_single_branch_fetches_only_that_branch(git_server, plain_http, tmp_path):
    from dulwich.repo import Repo

    host, feature = git_server["host"], git_server["feature"]
    whole = Repo(str(_open(f"git://{host}/org/app.git", tmp_path / "a")))
    assert feature.encode() in whole.object_store
    single = Repo(str(_open(f"git://{host}/org/app.git", tmp_path / "b", branch="main", single_branch=True)))
    assert feature.encode() not in single.object_store
    assert (Path(single.path) / "hello.txt").read_text() == "v2\n"


def test_git_submodules_only_when_asked(git_server, plain_http, tmp_path):
    host = git_server["host"]
    plain = _open(f"git://{host}/org/app.git", tmp_path / "a")
    assert not (plain / "lib/lib.txt").exists()
    deep = _open(f"git://{host}/org/app.git", tmp_path / "b", recurse_submodules=True)
    assert (deep / "lib/lib.txt").read_text() == "from the submodule\n"


def test_git_credentials_from_the_environment(git_server, plain_http, tmp_path, monkeypatch):
    spec = f"git://{git_server['host']}/private/app.git"
    with pytest.raises(UsageError, match=f"--context={spec}: cannot fetch"):
        _open(spec, tmp_path / "a")
    monkeypatch.setenv("GIT_USERNAME", "gituser")
    monkeypatch.setenv("GIT_PASSWORD", "gitpass")
    assert (_open(spec, tmp_path / "b") / "hello.txt").read_text() == "v2\n"


def test_git_errors_are_one_line(git_server, plain_http, tmp_path):
    host = git_server["host"]
    with pytest.raises(UsageError, match="--git branch=nope: invalid branch"):
        _open(f"git://{host}/org/app.git", tmp_path / "a", branch="nope")
    with pytest.raises(UsageError, match="has no ref refs/heads/nope"):
        _open(f"git://{host}/org/app.git#refs/heads/nope", tmp_path / "b")
    with pytest.raises(UsageError, match="cannot fetch"):
        _open(f"git://{host}/org/missing.git", tmp_path / "c")
    assert not list((tmp_path / "a" / "w").iterdir())  # nothing half-cloned left behind


def test_git_defaults_to_https_like_kaniko(git_server, tmp_path, monkeypatch):
    monkeypatch.delenv("GIT_PULL_METHOD", raising=False)
    with pytest.raises(UsageError, match=f"https://{git_server['host']}/org/app.git"):
        _open(f"git://{git_server['host']}/org/app.git", tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_executor_builds_a_git_context_sub_path(git_server, tmp_path):
    proc = executor(f"--context=git://{git_server['host']}/org/app.git#refs/heads/main",
                    "--context-sub-path=sub", "--dockerfile=Dockerfile", "--git=single-branch=true",
                    "--no-push", "--tar-path=image.tar", cwd=tmp_path, env={"GIT_PULL_METHOD": "http"})
    assert b"in the sub path" in proc.stdout + proc.stderr
    image = unpack(f"docker-archive:{tmp_path / 'image.tar'}", tmp_path / "u")
    assert (image.rootfs / "sub.txt").read_text() == "in the sub path\n"


# -- S3 ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    port = free_port()
    workdir = tmp_path_factory.mktemp("moto")
    log = open(workdir / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    endpoint = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((workdir / "moto.log").read_text()[-2000:])
            time.sleep(0.1)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                      "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED")}


def _tar_gz(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


def _bucket(endpoint: str, name: str, objects: dict[str, bytes]) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=name)
    for key, data in objects.items():
        client.put_object(Bucket=name, Key=key, Body=data)


def test_s3_context_with_kanikos_endpoint_variables(s3_server, aws_env, tmp_path, monkeypatch):
    _bucket(s3_server, "ctx", {"app/ctx.tar.gz": _tar_gz({"Dockerfile": "FROM scratch\n", "a.txt": "s3 one\n"}),
                               "context.tar.gz": _tar_gz({"Dockerfile": "FROM scratch\n", "a.txt": "default\n"})})
    monkeypatch.setenv("S3_ENDPOINT", s3_server)
    monkeypatch.setenv("S3_FORCE_PATH_STYLE", "true")
    root = open_context("s3://ctx/app/ctx.tar.gz", workdir=tmp_path / "w").root
    assert (root / "a.txt").read_text() == "s3 one\n"
    # no key: Kaniko's default object name
    assert (open_context("s3://ctx", workdir=tmp_path / "w").root / "a.txt").read_text() == "default\n"
    with pytest.raises(UsageError, match="--context=s3://ctx/missing.tar.gz: cannot download"):
        open_context("s3://ctx/missing.tar.gz", workdir=tmp_path / "w2")
    assert not (tmp_path / "w2").exists() or not list((tmp_path / "w2").iterdir())


def test_s3_context_with_aws_endpoint_url(s3_server, aws_env, tmp_path, monkeypatch):
    _bucket(s3_server, "other", {"c.tar.gz": _tar_gz({"Dockerfile": "FROM scratch\n", "b.txt": "via sdk\n"})})
    monkeypatch.delenv("S3_ENDPOINT", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)  # the SDK's own variable
    assert (open_context("s3://other/c.tar.gz", workdir=tmp_path / "w").root / "b.txt").read_text() == "via sdk\n"


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_executor_builds_an_s3_context(s3_server, aws_env, tmp_path, busybox_image, registry):
    _bucket(s3_server, "builds", {"ctx.tar.gz": _tar_gz({"Dockerfile": f"FROM {busybox_image}\nCOPY s.txt /s.txt\n",
                                                         "s.txt": "from s3\n"})})
    ref = registry.ref("ctx/s3:1")
    executor("--context=s3://builds/ctx.tar.gz", f"--destination={ref}", cwd=tmp_path,
             env={**aws_env, "S3_ENDPOINT": s3_server, "S3_FORCE_PATH_STYLE": "true"})
    assert (unpack(f"docker://{ref}", tmp_path / "u").rootfs / "s.txt").read_text() == "from s3\n"


# -- tar contexts and the refused schemes, through the CLI ------------------------------

@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_executor_tar_contexts(tmp_path, busybox_image):
    data = _tar_gz({"Dockerfile": f"FROM {busybox_image}\nCOPY t.txt /t.txt\n", "t.txt": "tarred\n"})
    (tmp_path / "ctx.tar.gz").write_bytes(data)
    (tmp_path / "ctx.tar").write_bytes(gzip.decompress(data))
    for n, (spec, stdin) in enumerate([("tar://ctx.tar.gz", None), ("tar://ctx.tar", None), ("tar://stdin", data)]):
        executor(f"--context={spec}", "--no-push", f"--tar-path=out{n}.tar", cwd=tmp_path, stdin=stdin)
        rootfs = unpack(f"docker-archive:{tmp_path / f'out{n}.tar'}", tmp_path / f"u{n}").rootfs
        assert (rootfs / "t.txt").read_text() == "tarred\n"


@pytest.mark.parametrize("spec, named", [
    ("gs://bucket/ctx.tar.gz", "gs://"),
    ("https://acct.blob.core.windows.net/c/ctx.tar.gz", "Azure blob storage"),
])
def test_unsupported_sources_are_one_line(tmp_path, spec, named):
    proc = executor(f"--context={spec}", "--no-push", cwd=tmp_path, check=False)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2  # a usage error
    assert [l for l in lines if "error" in l] == [lines[-1]] and lines[-1].startswith("error: ") and named in lines[-1] and "s3://" in lines[-1] and "git://" in lines[-1]
    assert b"Traceback" not in proc.stderr


# -- https:// tarball contexts and Dockerfiles ---------------------------------------------

@pytest.fixture
def https_files(tmp_path):
    """A TLS file server on loopback with its own CA (made with openssl)."""
    import http.server
    import ssl

    d = tmp_path / "https"
    d.mkdir()
    run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA", "-keyout", "ca.key",
        "-out", "ca.pem")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=files", "-keyout", "srv.key", "-out", "srv.csr")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext", "-out", "srv.pem")
    served = d / "files"
    served.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "srv.pem", d / "srv.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_port}", served, d / "ca.pem"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")
def test_executor_https_context_and_dockerfile(tmp_path, https_files, busybox_image):
    url, served, ca = https_files
    (served / "ctx.tar.gz").write_bytes(_tar_gz({"w.txt": "over https\n"}))
    (served / "Remote.Dockerfile").write_text(f"FROM {busybox_image}\nCOPY w.txt /w.txt\n")
    executor(f"--context={url}/ctx.tar.gz", f"--dockerfile={url}/Remote.Dockerfile", "--no-push",
             "--tar-path=out.tar", cwd=tmp_path, env={"REQUESTS_CA_BUNDLE": str(ca)})
    assert (unpack(f"docker-archive:{tmp_path / 'out.tar'}", tmp_path / "u").rootfs / "w.txt").read_text() == \
        "over https\n"
    proc = executor(f"--context={url}/missing.tar.gz", "--no-push", cwd=tmp_path, check=False,
                    env={"REQUESTS_CA_BUNDLE": str(ca)})
    assert proc.returncode != 0 and f"--context={url}/missing.tar.gz: HTTP 404" in proc.stderr.decode()


def test_git_unknown_commit_is_one_line(git_server, plain_http, tmp_path):
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(UsageError, match=f"commit {missing} not found in http://"):
        _open(f"git://{git_server['host']}/org/app.git#refs/heads/main#{missing}", tmp_path)
