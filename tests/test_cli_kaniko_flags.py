"""Kaniko flags with behaviour of their own, end to end against real registries on loopback:
the push-permission check, --no-push outputs, mutual TLS, mirrors without fallback,
immutable tags, base-extraction retries, --force-build-metadata, and the info line
of flags that change nothing here."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pybuildless.registry.remote import fetch_image
from tests.buildkit import executor, unpack, write_context
from tests.faultproxy import Fault, FaultProxy
from tests.fixtures.registry import free_port

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]

MARKER = "RUN-STEP-42"  # what the RUN below prints; its own text (shown in step lines) differs
RUN_MARKER = "RUN echo RUN-STEP-$((40+2))"


def docker_config(tmp_path: Path, host: str, user: str, password: str) -> dict:
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (d / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(d)}


def output(proc) -> str:
    return (proc.stdout + proc.stderr).decode(errors="replace")


# -- the push-permission check -----------------------------------------------------------

def test_wrong_credentials_fail_before_the_first_run(tmp_path, registry_basic, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\n{RUN_MARKER}\n"})
    dest = registry_basic.ref("perm/app:1")
    wrong = docker_config(tmp_path, registry_basic.host, registry_basic.username, "wrong-password")
    started = time.monotonic()
    proc = executor("-c", str(ctx), "-d", dest, cwd=tmp_path, env=wrong, check=False)
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert f"checking push permission for {dest}" in err and "--skip-push-permission-check" in err, err
    assert MARKER not in output(proc) and "STEP" not in output(proc)  # failed before building anything
    assert time.monotonic() - started < 30
    # skipping the check: the build runs, and then the push fails
    proc = executor("-c", str(ctx), "-d", dest, "--skip-push-permission-check", cwd=tmp_path, env=wrong,
                    check=False)
    assert proc.returncode != 0 and MARKER in output(proc)
    assert "checking push permission" not in proc.stderr.decode()
    # the right credentials: checked, built, pushed
    right = docker_config(tmp_path, registry_basic.host, registry_basic.username, registry_basic.password)
    proc = executor("-c", str(ctx), "-d", dest, cwd=tmp_path, env=right)
    assert MARKER in output(proc)


def test_no_push_checks_only_a_cache_repo(tmp_path, registry_basic, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\n{RUN_MARKER}\n"})
    wrong = docker_config(tmp_path, registry_basic.host, registry_basic.username, "wrong-password")
    # --no-push: the destination is not checked (Kaniko's CheckPushPermissions) ...
    executor("-c", str(ctx), "-d", registry_basic.ref("perm/np:1"), "--no-push", cwd=tmp_path, env=wrong)
    # ... but a cache repository that would be pushed to is
    proc = executor("-c", str(ctx), "--no-push", "--cache=true", f"--cache-repo={registry_basic.ref('perm/cache')}",
                    cwd=tmp_path, env=wrong, check=False)
    assert proc.returncode != 0 and "checking push permission" in proc.stderr.decode()
    assert MARKER not in output(proc)


# -- where the image goes -------------------------------------------------------------------

def test_no_push_alone_writes_nothing(tmp_path, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\n{RUN_MARKER}\n"})
    work = tmp_path / "cwd"
    work.mkdir()
    proc = executor("-c", str(ctx), "--no-push", cwd=work)
    assert MARKER in output(proc) and "not written anywhere" in proc.stderr.decode()
    assert list(work.iterdir()) == []
    # neither a destination nor --no-push: the local OCI layout, as before
    executor("-c", str(ctx), cwd=work)
    assert (work / "pybuildless-image" / "index.json").exists()


# -- mutual TLS ----------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def mtls_registry(tmp_path_factory):
    d = tmp_path_factory.mktemp("mtls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ext in (("server", "server.ext"), ("client", "client.ext")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", ext, "-out", f"{name}.pem", cwd=d)
    port = free_port()
    (d / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {d / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: mtls-test\n"
        f"  tls:\n    certificate: {d / 'server.pem'}\n    key: {d / 'server.key'}\n"
        f"    clientcas:\n      - {d / 'ca.pem'}\n")
    log = open(d / "registry.log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(d / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        probe = subprocess.run(["curl", "-sf", "--cacert", str(d / "ca.pem"), "--cert", str(d / "client.pem"),
                                "--key", str(d / "client.key"), f"https://127.0.0.1:{port}/v2/"], capture_output=True)
        if probe.returncode == 0:
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError((d / "registry.log").read_text()[-2000:])
        time.sleep(0.1)
    yield f"127.0.0.1:{port}", d
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_registry_client_cert_mutual_tls(tmp_path, mtls_registry, busybox_image):
    host, d = mtls_registry
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nRUN echo mtls > /m.txt\n"})
    dest = f"{host}/mtls/app:1"
    trust = f"--registry-certificate={host}={d / 'ca.pem'}"
    proc = executor("-c", str(ctx), "-d", dest, trust, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and MARKER not in output(proc)  # refused without a client certificate
    executor("-c", str(ctx), "-d", dest, trust, f"--registry-client-cert={host}={d / 'client.pem'},{d / 'client.key'}",
             cwd=tmp_path)
    probe = subprocess.run(["curl", "-sf", "--cacert", str(d / "ca.pem"), "--cert", str(d / "client.pem"), "--key",
                            str(d / "client.key"), f"https://{host}/v2/mtls/app/tags/list"], capture_output=True)
    assert json.loads(probe.stdout)["tags"] == ["1"]
    proc = executor("-c", str(ctx), "-d", dest, trust, f"--registry-client-cert={host}={d / 'client.pem'}",
                    cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "--registry-client-cert" in proc.stderr.decode()


# -- mirrors -------------------------------------------------------------------------------

def test_registry_mirror_without_default_fallback(tmp_path, registry_factory, busybox_layout):
    from tests.fixtures.images import push_layout

    mirror = registry_factory()
    push_layout(busybox_layout, mirror, "library/busybox:latest")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:latest\nRUN echo mirrored > /m.txt\n"})
    executor("-c", str(ctx), "--no-push", "--tar-path=out.tar", f"--registry-mirror={mirror.host}",
             "--skip-default-registry-fallback", cwd=tmp_path)
    assert (unpack(f"docker-archive:{tmp_path / 'out.tar'}", tmp_path / "u").rootfs / "m.txt").read_text() == \
        "mirrored\n"
    # not on the mirror: fails there, and Docker Hub is never tried
    ctx2 = write_context(tmp_path / "ctx2", {"Dockerfile": "FROM notonmirror/app:1\n"})
    proc = executor("-c", str(ctx2), "--no-push", f"--registry-mirror={mirror.host}",
                    "--skip-default-registry-fallback", cwd=tmp_path, check=False)
    err = proc.stderr.decode()
    assert proc.returncode != 0 and mirror.host in err and "docker.io" not in err.replace(mirror.host, ""), err


# -- immutable tags ------------------------------------------------------------------------

ECR_IMMUTABLE = (b'{"errors":[{"code":"TAG_INVALID","message":"The image tag \'1\' already exists in the \'imm/app\' '
                 b'repository and cannot be overwritten because the repository is immutable."}]}')


def test_push_ignore_immutable_tag_errors(tmp_path, registry, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nRUN echo imm > /i.txt\n"})
    with FaultProxy(registry.url) as proxy:
        proxy.add(Fault("status", method="PUT", path=r"/v2/imm/app/manifests/1$", status=400, count=-1,
                        body=ECR_IMMUTABLE))
        dest = f"{proxy.host}/imm/app:1"
        proc = executor("-c", str(ctx), "-d", dest, "-d", f"{proxy.host}/imm/app:2", cwd=tmp_path, check=False)
        assert proc.returncode != 0 and "cannot be overwritten because the repository is immutable" in \
            proc.stderr.decode()
        proc = executor("-c", str(ctx), "-d", dest, "-d", f"{proxy.host}/imm/app:2",
                        "--push-ignore-immutable-tag-errors", cwd=tmp_path)
        assert "immutable tag error ignored" in proc.stderr.decode()
    assert fetch_image(registry.ref("imm/app:2")).digest  # the other destination was pushed


# -- --image-fs-extract-retry --------------------------------------------------------------

def test_image_fs_extract_retry(tmp_path, registry, busybox_image):
    layer = str(fetch_image(busybox_image).layers()[0].digest)
    repo_tag = busybox_image.split("/", 1)[1]
    with FaultProxy(registry.url) as proxy:
        base = f"{proxy.host}/{repo_tag}"
        ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\n{RUN_MARKER}\n"})
        # --cache streams base layers straight into the extraction (nothing downloaded first)
        args = ("-c", str(ctx), "--no-push", "--cache=true", f"--cache-repo=oci:{tmp_path / 'cache'}")
        # a layer store of this test's own: the session's may already hold the base layer, and a
        # stored layer is never downloaded or extracted again
        store = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
        proxy.add(Fault("reset_mid_body", method="GET", path=f"/blobs/{layer}", count=-1))
        proc = executor(*args, "--image-fs-extract-retry=2", cwd=tmp_path, env=store, check=False)
        assert proc.returncode != 0 and "--image-fs-extract-retry" in proc.stderr.decode()
        failing_gets = proxy.count("GET", f"/blobs/{layer}")
        assert failing_gets % 3 == 0  # three whole extractions, each with the client's own retries
        for retries, ok in ((0, False), (2, True)):
            proxy.clear()  # two extractions' worth of failures
            proxy.add(Fault("reset_mid_body", method="GET", path=f"/blobs/{layer}", count=failing_gets // 3 * 2))
            proc = executor(*args, f"--image-fs-extract-retry={retries}", cwd=tmp_path, env=store, check=False)
            assert (proc.returncode == 0) is ok and (MARKER in output(proc)) is ok, output(proc)


# -- --force-build-metadata and the flags that change nothing here --------------------------

def test_force_build_metadata_adds_a_layer_per_step(tmp_path, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nENV A=1\nLABEL b=2\n"
                                                         "RUN true\nWORKDIR /\n"})
    executor("-c", str(ctx), "--no-push", "--oci-layout-path=plain", cwd=tmp_path)
    executor("-c", str(ctx), "--no-push", "--oci-layout-path=forced", "--force-build-metadata", cwd=tmp_path)
    base_layers = len(fetch_image(busybox_image).layers())
    plain = unpack(f"oci:{tmp_path / 'plain'}:latest", tmp_path / "u1")
    forced = unpack(f"oci:{tmp_path / 'forced'}:latest", tmp_path / "u2")
    # BuildKit's rule without the flag: RUN gets a layer even when nothing changed, WORKDIR / none
    assert len(plain.manifest["layers"]) == base_layers + 1
    assert len(forced.manifest["layers"]) == base_layers + 4  # one (empty) layer per step, as Kaniko
    assert not any(h.get("empty_layer") for h in forced.config["history"][-4:])


def test_flags_that_change_nothing_say_why(tmp_path, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\n"})
    proc = executor("-c", str(ctx), "--no-push", "--use-new-run", "--skip-unused-stages=true",
                    "--compressed-caching=false", "--snapshot-mode=redo", "--tarPath=o.tar", cwd=tmp_path)
    err = proc.stderr.decode()
    for text in ("--use-new-run:", "--skip-unused-stages: always on", "--compressed-caching=false:",
                 "--snapshot-mode=redo:", "Flag --tarPath is deprecated. Use: --tar-path"):
        assert text in err, err
    assert (tmp_path / "o.tar").exists()
