"""examples/kubernetes/pod.yaml run by ``podman kube play`` (podman 4.3) with the executor image
built from this checkout, a context volume and the registry secret: the pod builds and pushes.

What the test changes in the manifest, and why (each is checked below to still be needed, so the
list shrinks when podman can do more):

- the destination registry: ``registry.example.com`` becomes the loopback basic-auth registry
  fixture (the executor image keeps the example's name: it is tagged so in podman's store);
- ``optional: false`` on the secret volume, Kubernetes' default written out: podman 4.3.1 panics
  in kube.VolumeFromSecret (volume.go:165, a nil pointer) on a secret volume that leaves
  ``optional`` out;
- the credentials mount: podman 4.3 ignores ``subPath`` (and ``items``) for secret volumes and
  mounts the whole secret directory at the mount path, so ``/kaniko/.docker/config.json`` would
  be a directory holding ``.dockerconfigjson``. The test mounts the secret at ``/kaniko/.docker``
  and gives the Secret the same JSON under the key ``config.json`` too;
- the Secret's values: podman 4.3 writes a ``data`` value into the volume as it is written in the
  manifest, still base64-encoded, and ignores ``stringData``. The test's Secret (which a user
  makes with ``kubectl create secret docker-registry``; it is not part of the example) carries the
  JSON itself as its ``data`` value, stored with ``podman secret create`` since ``kube play``
  refuses a ``data`` value that is not base64.

The Job (examples/kubernetes/job.yaml): podman 4.3 plays only Pods, Deployments and
PersistentVolumeClaims and refuses it; its pod template (what the Job controller would create) is
played as a Pod instead, with the init container's image and repository stood in for (see
test_job_template_clones_and_builds).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures.dockerd import ExecutorImages
from tests.fixtures.podman import Podman, remove_cgroup_tree, signature_policy
from tests.fixtures.podman import podman as private_podman  # noqa: F401  (fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2400),  # the executor images are built once per session
    pytest.mark.skipif(os.geteuid() != 0, reason="podman's rootful mode needs root"),
]

ROOT = Path(__file__).resolve().parent.parent
POD = ROOT / "examples" / "kubernetes" / "pod.yaml"
JOB = ROOT / "examples" / "kubernetes" / "job.yaml"
EXAMPLE_REGISTRY = "registry.example.com"
CREDENTIALS_MOUNT = "/kaniko/.docker/config.json"


def _podman_version() -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (make deps installs Debian's podman)")
    return subprocess.run(["podman", "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]


def _docker_config(registry) -> str:
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    return json.dumps({"auths": {registry.host: {"auth": auth}}})


def _secret_manifest(registry, *, for_podman_43: bool) -> str:
    """The Secret ``kubectl create secret docker-registry registry-credentials`` makes, or what
    podman 4.3 needs instead (module docstring): the JSON itself as the ``data`` value, also under
    ``config.json`` (``kube play`` would refuse that as not base64: ``_podman_secret`` stores it)."""
    config = _docker_config(registry)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "registry-credentials"},
              "type": "kubernetes.io/dockerconfigjson"}
    if for_podman_43:
        secret["data"] = {".dockerconfigjson": config, "config.json": config}
    else:
        secret["data"] = {".dockerconfigjson": base64.b64encode(config.encode()).decode()}
    return yaml.safe_dump(secret)


def _podman_secret(engine: Podman, work: Path, registry) -> None:
    """The credentials secret as podman 4.3 can mount it (module docstring), stored with
    ``podman secret create``: a secret volume reads back the Secret document it holds."""
    path = work / "secret-for-podman.yaml"
    path.write_text(_secret_manifest(registry, for_podman_43=True))
    engine("secret", "create", "registry-credentials", str(path))


def _with_registry(text: str, registry) -> str:
    """The example with the destination registry replaced (its executor image name is kept)."""
    executor_image = f"{EXAMPLE_REGISTRY}/pybuildless/executor"
    return (text.replace(executor_image, "\0").replace(EXAMPLE_REGISTRY, registry.host)
            .replace("\0", executor_image))


def _adapt_for_podman_43(doc: dict) -> dict:
    """The two changes podman 4.3 needs (module docstring): optional written out, and the
    credentials mounted as a directory."""
    doc = copy.deepcopy(doc)
    spec = doc["spec"]
    for volume in spec["volumes"]:
        if "secret" in volume:
            volume["secret"]["optional"] = False
    for container in spec["containers"]:
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] == CREDENTIALS_MOUNT:
                assert mount.pop("subPath") == ".dockerconfigjson"
                mount["mountPath"] = "/kaniko/.docker"
    return doc


def _load_executor(engine: Podman, images: ExecutorImages, target: str, name: str) -> None:
    engine("pull", signature_policy(engine), "--tls-verify=false", images.ref(target), timeout=600)
    engine("tag", images.ref(target), name)


def _context_volume(engine: Podman, name: str, files: dict[str, str]) -> None:
    """The PersistentVolumeClaim ``name``: kube play maps a claim to the podman volume of that name."""
    engine("volume", "create", name)
    mountpoint = Path(engine("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout.strip())
    for rel, text in files.items():
        (mountpoint / rel).parent.mkdir(parents=True, exist_ok=True)
        (mountpoint / rel).write_text(text)


def _play(engine: Podman, work: Path, name: str, text: str, *, check: bool = True) -> subprocess.CompletedProcess:
    path = work / name
    path.write_text(text)
    return engine("kube", "play", "--network", "host", str(path), check=check, timeout=600)


def _wait(engine: Podman, container: str) -> tuple[int, str]:
    """Exit code and log of a container of a played pod, once it has stopped."""
    code = engine("wait", container, timeout=900).stdout.strip()
    logs = engine("logs", container, check=False)
    return int(code), logs.stdout + logs.stderr


DOCKERFILE = """\
FROM {base} AS build
RUN echo "built by a pod on $(uname -m)" > /msg
FROM {base}
COPY --from=build /msg /msg
COPY note.txt /note.txt
RUN cat /note.txt >> /msg
CMD ["cat", "/msg"]
"""


@pytest.fixture
def podman(private_podman: Podman):  # noqa: F811
    """podman with private state; the played pods' cgroups (cgroupfs: /libpod_parent/POD-ID in
    every hierarchy) are removed with the pods."""
    yield private_podman
    pods = private_podman("pod", "ps", "-q", "--no-trunc", check=False).stdout.split()
    private_podman("pod", "rm", "-f", "-a", check=False)
    for pod in pods:
        remove_cgroup_tree(f"/libpod_parent/{pod}")


@pytest.fixture
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kube")


def test_pod_example_builds_and_pushes(podman: Podman, executor_images, registry_basic, busybox_image,  # noqa: F811
                                       work) -> None:
    _podman_version()
    pod = yaml.safe_load(_with_registry(POD.read_text(), registry_basic))
    executor = pod["spec"]["containers"][0]
    _load_executor(podman, executor_images, "executor", executor["image"])
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                 if "persistentVolumeClaim" in v)
    _context_volume(podman, claim, {"Dockerfile": DOCKERFILE.format(base=busybox_image),
                                    "note.txt": "context from the volume\n"})
    _podman_secret(podman, work, registry_basic)
    _play(podman, work, "pod.yaml", yaml.safe_dump(_adapt_for_podman_43(pod)))

    code, log = _wait(podman, f"{pod['metadata']['name']}-{executor['name']}")
    assert code == 0, log[-4000:]
    destination = next(a.split("=", 1)[1] for a in executor["args"] if a.startswith("--destination="))
    assert destination == f"{registry_basic.host}/team/app:1.0.0"
    # the image it pushed, run by podman
    podman("pull", signature_policy(podman), "--tls-verify=false", "--creds", registry_basic.creds, destination,
           timeout=300)
    out = podman.run(destination).stdout
    assert out == f"built by a pod on {os.uname().machine}\ncontext from the volume\n"
    # --cache=true with no --cache-repo: the layer cache went to <destination repo>/cache
    tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", "--creds", registry_basic.creds,
                           f"docker://{registry_basic.host}/team/app/cache"], capture_output=True, text=True)
    assert tags.returncode == 0 and json.loads(tags.stdout)["Tags"], tags.stderr


def test_podman_43_needs_what_the_test_changes(podman: Podman, executor_images, registry_basic, work) -> None:  # noqa: F811
    """The changes listed in the module docstring are still needed by this podman."""
    version = _podman_version()
    pod = yaml.safe_load(_with_registry(POD.read_text(), registry_basic))
    _play(podman, work, "secret.yaml", _secret_manifest(registry_basic, for_podman_43=False))
    podman("volume", "create", "build-context")
    # 1. the example as written: a secret volume without `optional`
    played = _play(podman, work, "pod.yaml", yaml.safe_dump(pod), check=False)
    assert played.returncode != 0 and "VolumeFromSecret" in played.stderr and "nil pointer" in played.stderr, (
        f"podman {version} plays the secret volume as written now: drop `optional: false` from the test\n"
        f"{played.stdout}{played.stderr}")
    # 2. optional written out, subPath kept: the mount is the secret's directory, not its key
    _load_executor(podman, executor_images, "debug", pod["spec"]["containers"][0]["image"])
    probe = copy.deepcopy(pod)
    probe["metadata"]["name"] = "subpath-probe"
    probe["spec"]["volumes"] = [v for v in probe["spec"]["volumes"] if "secret" in v]
    probe["spec"]["volumes"][0]["secret"]["optional"] = False
    container = probe["spec"]["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] == CREDENTIALS_MOUNT]
    container["command"] = ["/busybox/sh", "-c",
                            f"ls -A {CREDENTIALS_MOUNT} && cat {CREDENTIALS_MOUNT}/.dockerconfigjson"]
    container.pop("args")
    _play(podman, work, "probe.yaml", yaml.safe_dump(probe))
    code, log = _wait(podman, "subpath-probe-executor")
    assert code == 0 and log.split()[0] == ".dockerconfigjson", (
        f"podman {version} mounts the subPath now: the test can keep the example's mount\n{log}")
    # 3. and the Secret's `data` arrives still base64-encoded
    assert log.split()[1] == base64.b64encode(_docker_config(registry_basic).encode()).decode(), (
        f"podman {version} decodes secret data now: the test can keep `data`\n{log}")


def test_job_is_not_a_kind_podman_43_plays(podman: Podman, work) -> None:  # noqa: F811
    version = _podman_version()
    played = _play(podman, work, "job.yaml", JOB.read_text(), check=False)
    assert played.returncode != 0 and "does not contain any supported kube kind" in played.stderr, (
        f"podman {version} plays Jobs now: run job.yaml itself\n{played.stdout}{played.stderr}")


# --- the Job's pod template: an init container clones over https, the executor builds ---------


def _git_image(engine: Podman, work: Path, name: str, ca: Path) -> None:
    """A stand-in for alpine/git (ENTRYPOINT ["git"]): this machine's git, its https helper and
    their libraries, trusting the test CA as the system bundle."""
    sys_path = Path(__file__).resolve().parent.parent / "docker"
    import sys

    sys.path.insert(0, str(sys_path))
    try:
        from make_local_bases import GROUP, PASSWD, _copy_libs
    finally:
        sys.path.pop(0)
    root = work / "git-rootfs"
    for d in ("usr/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib/git-core", "etc/ssl/certs", "tmp",
              "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{link}")
    git = Path(os.path.realpath(shutil.which("git") or "/usr/bin/git"))
    shutil.copy2(git, root / "usr/bin/git")
    _copy_libs(git, root)
    helper = Path("/usr/lib/git-core/git-remote-http")
    shutil.copy2(helper, root / "usr/lib/git-core/git-remote-http")
    (root / "usr/lib/git-core/git-remote-https").symlink_to("git-remote-http")
    _copy_libs(helper, root)
    for lib in Path("/lib/x86_64-linux-gnu").glob("libnss_*.so*"):  # name lookups
        shutil.copy2(lib, root / "usr/lib/x86_64-linux-gnu" / lib.name, follow_symlinks=False)
    shutil.copyfile(ca, root / "etc/ssl/certs/ca-certificates.crt")
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    import tarfile

    with tarfile.open(work / "git.tar", "w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)
    engine("import", "--change", "ENV PATH=/usr/bin:/bin", "--change", 'ENTRYPOINT ["git"]', str(work / "git.tar"),
           name)


@pytest.fixture
def https_git(tmp_path_factory, busybox_image):
    """team/app.git with a Dockerfile, served by git http-backend over TLS on loopback."""
    import ssl
    import threading
    from http.server import ThreadingHTTPServer

    from tests.fixtures.registry import free_port
    from tests.test_cli_contexts import _git, _GitHandler
    from tests.test_registry_tls import _cert
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    base = tmp_path_factory.mktemp("https-git")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "git test CA")])
    ca = _cert("git test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("127.0.0.1", key, ca_name, ca_key, ca=False, ip="127.0.0.1")
    (base / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (base / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (base / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    app = base / "app"
    app.mkdir()
    _git("init", "-q", "-b", "main", cwd=app)
    (app / "Dockerfile").write_text(DOCKERFILE.format(base=busybox_image))
    (app / "note.txt").write_text("context cloned by the init container\n")
    _git("add", "-A", cwd=app)
    _git("commit", "-q", "-m", "app", cwd=app)
    root = base / "srv"
    _git("clone", "-q", "--bare", str(app), str(root / "team/app.git"), cwd=base)
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), type("Handler", (_GitHandler,), {"root": root}))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(base / "cert.pem", base / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"url": f"https://127.0.0.1:{port}/team/app.git", "ca": base / "ca.pem"}
    finally:
        server.shutdown()
        server.server_close()


def test_job_template_clones_and_builds(podman: Podman, executor_images, registry_basic, https_git,  # noqa: F811
                                        work) -> None:
    """What the Job controller would run: the Job's pod template as a Pod. The init container's
    image is a stand-in for alpine/git (this machine's git; no internet), its repository a loopback
    https server: the only other change is the clone URL, as the registry's."""
    _podman_version()
    job = yaml.safe_load(_with_registry(JOB.read_text(), registry_basic))
    assert job["kind"] == "Job"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": job["metadata"]["name"]},
           "spec": job["spec"]["template"]["spec"]}
    (init,) = pod["spec"]["initContainers"]
    example_url = next(a for a in init["args"] if a.startswith("https://"))
    init["args"] = [https_git["url"] if a == example_url else a for a in init["args"]]
    _git_image(podman, work, init["image"], https_git["ca"])
    executor = pod["spec"]["containers"][0]
    _load_executor(podman, executor_images, "executor", executor["image"])
    _podman_secret(podman, work, registry_basic)
    _play(podman, work, "job-pod.yaml", yaml.safe_dump(_adapt_for_podman_43(pod)))

    code, log = _wait(podman, f"{pod['metadata']['name']}-{executor['name']}")
    assert code == 0, log[-4000:]
    # (podman removes an init container once it has run: the clone shows in the image below)
    destination = next(a.split("=", 1)[1] for a in executor["args"] if a.startswith("--destination="))
    assert destination == f"{registry_basic.host}/team/app:latest"
    podman("pull", signature_policy(podman), "--tls-verify=false", "--creds", registry_basic.creds, destination,
           timeout=300)
    out = podman.run(destination).stdout
    assert out == f"built by a pod on {os.uname().machine}\ncontext cloned by the init container\n"
