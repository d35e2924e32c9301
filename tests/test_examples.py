"""The GitLab CI and Kubernetes examples: schema-valid (validated offline, with
the schemas the validators ship) and saying what the Kaniko-mode guide promises."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GITLAB = ROOT / "examples" / "gitlab-ci" / ".gitlab-ci.yml"
KUBERNETES = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))


def offline(argv: list[str]) -> subprocess.CompletedProcess:
    """Run a validator with no network at all (a fresh network namespace when root):
    it must not fetch schemas at test time."""
    if os.geteuid() == 0 and shutil.which("unshare"):
        argv = ["unshare", "--net", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not os.path.exists(path):
        pytest.fail(f"{name} is not installed (pip install check-jsonschema kubernetes-validate)")
    return path


def test_gitlab_ci_matches_the_gitlab_schema() -> None:
    result = offline([tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(GITLAB)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_gitlab_schema_check_rejects_a_broken_pipeline(tmp_path: Path) -> None:
    broken = yaml.safe_load(GITLAB.read_text())
    broken["build-release"]["rules"] = "on tags"  # rules must be a list
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(yaml.safe_dump(broken))
    result = offline([tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(path)])
    assert result.returncode != 0


def test_gitlab_jobs_push_on_tags_and_only_build_merge_requests() -> None:
    ci = yaml.safe_load(GITLAB.read_text())
    template = ci[".pybuildless"]
    assert template["image"]["entrypoint"] == [""] and template["image"]["name"].endswith(":debug")
    release, mr = ci["build-release"], ci["build-merge-request"]
    assert release["rules"] == [{"if": "$CI_COMMIT_TAG"}]
    assert mr["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    release_cmd, mr_cmd = " ".join(release["script"]), " ".join(mr["script"])
    assert release_cmd.startswith("/kaniko/executor") and "--destination" in release_cmd
    assert "--no-push" not in release_cmd and "--no-push" in mr_cmd and "--destination" not in mr_cmd
    for cmd in (release_cmd, mr_cmd):
        assert "--cache=true" in cmd and "--cache-repo" in cmd
    assert any("/kaniko/.docker/config.json" in line for line in template["before_script"])


@pytest.mark.parametrize("manifest", KUBERNETES, ids=lambda p: p.name)
def test_kubernetes_manifest_matches_the_api_schema(manifest: Path) -> None:
    result = offline([tool("kubernetes-validate"), "--strict", str(manifest)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout + result.stderr


def test_kubernetes_schema_check_rejects_a_broken_manifest(tmp_path: Path) -> None:
    pod = yaml.safe_load((ROOT / "examples/kubernetes/pod.yaml").read_text())
    pod["spec"]["containers"][0]["resources"]["limits"] = ["2Gi"]  # must be a map
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    result = offline([tool("kubernetes-validate"), "--strict", str(path)])
    assert result.returncode != 0


def _pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"] if doc["kind"] == "Job" else doc["spec"]


@pytest.mark.parametrize("manifest", KUBERNETES, ids=lambda p: p.name)
def test_kubernetes_executor_is_unprivileged_with_limits_and_credentials(manifest: Path) -> None:
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    assert {d["kind"] for d in docs} <= {"Pod", "Job"}
    for doc in docs:
        spec = _pod_spec(doc)
        secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"].get("privileged", False) is False
            assert container["resources"]["limits"]
        executor = next(c for c in spec["containers"] if c["name"] == "executor")
        mounts = {m["mountPath"]: m for m in executor["volumeMounts"]}
        assert mounts["/kaniko/.docker/config.json"]["name"] in secrets
        assert "/workspace" in mounts
        assert "--context=dir:///workspace" in executor["args"]


# --- the rootless variant ------------------------------------------------------------------------

ROOTLESS_POD = ROOT / "examples" / "kubernetes" / "rootless-pod.yaml"
EXECUTOR_DOCKERFILE = ROOT / "Dockerfile.executor"


def _stage_instructions(stage: str) -> list[tuple[str, str]]:
    """(instruction, value) of one stage of Dockerfile.executor, as dockerfile-parse reads it."""
    import io

    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=io.BytesIO(EXECUTOR_DOCKERFILE.read_bytes()))
    found, current = [], None
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            words = ins["value"].split()
            current = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            continue
        if current == stage:
            found.append((ins["instruction"], ins["value"]))
    return found


def test_rootless_target_runs_as_uid_1000_with_subordinate_ids_and_userns() -> None:
    steps = _stage_instructions("rootless")
    assert ("USER", "1000:1000") in steps
    env = " ".join(v for k, v in steps if k == "ENV")
    assert "PYBUILDLESS_ISOLATION=userns" in env and "TMPDIR=/home/build/work" in env
    run = " ".join(v for k, v in steps if k == "RUN")
    assert 'echo "build:100000:65536" > /etc/subuid' in run and 'echo "build:100000:65536" > /etc/subgid' in run
    assert "useradd --uid 1000 --gid 1000" in run and "uidmap" in run
    assert "install -d -o 1000 -g 1000 -m 0700 /home/build/work" in run
    assert ("ENTRYPOINT", '["/kaniko/executor"]') in steps
    # the default target is still Kaniko's in-place executor
    last_from = [line for line in EXECUTOR_DOCKERFILE.read_text().splitlines() if line.startswith("FROM ")][-1]
    assert last_from.split()[-1] == "executor"


def test_rootless_pod_is_non_root_without_escalation_and_says_what_the_node_allows() -> None:
    pod = yaml.safe_load(ROOTLESS_POD.read_text())
    spec = pod["spec"]
    assert spec["hostUsers"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 1000
    executor = next(c for c in spec["containers"] if c["name"] == "executor")
    assert executor["image"].endswith(":rootless")
    sc = executor["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["runAsNonRoot"] is True and (sc["runAsUser"], sc["runAsGroup"]) == (1000, 1000)
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    # user namespaces, mounts and a fresh /proc inside the build: what the default profiles refuse
    assert sc["procMount"] == "Unmasked"
    assert sc["seccompProfile"]["type"] in ("Unconfined", "Localhost")
    assert sc["appArmorProfile"]["type"] in ("Unconfined", "Localhost")
    env = {e["name"]: e["value"] for e in executor.get("env", [])}
    assert env.get("PYBUILDLESS_ISOLATION", "userns") in ("userns", "auto")
    mounts = {m["mountPath"]: m["name"] for m in executor["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/home/build/work"]], "stage roots need a writable volume"
    text = ROOTLESS_POD.read_text()
    for needle in ("unprivileged_userns_clone", "apparmor_restrict_unprivileged_userns", "seccomp"):
        assert needle in text
    guide = (ROOT / "docs" / "rootless.md").read_text()
    assert "rootless-pod.yaml" in guide and "procMount" in guide and "allowPrivilegeEscalation" in guide


# --- the rootless image's filesystem in a jail, run as uid 1000 --------------------------------------

ROOTLESS_DOCKERFILE = """\
FROM {base}
COPY --chown=1000:1000 f /srv/data/f
RUN mkdir -p /gone/sub && {chown}rm -rf /gone && cat /proc/self/uid_map > /uidmap && id -u > /whoami
"""


def _copy_with_libraries(binary: Path, jail: Path) -> None:
    """``binary`` and what ldd lists for it, at the same paths inside the jail (setuid bit kept)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    paths = [binary] + [Path(w) for line in out.splitlines() for w in line.split() if w.startswith("/")]
    for path in paths:
        dest = jail / str(path).lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copy2(path.resolve(), dest)


def make_rootless_jail(jail: Path) -> Path:
    """The rootless target's filesystem: /kaniko plus what its RUN step adds (user 1000, subordinate
    ids, newuidmap/newgidmap, the work dir), assembled from this machine's files."""
    from tests.jail import assemble_executor_fs

    assemble_executor_fs(jail)
    etc = jail / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                "build:x:1000:1000::/home/build:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nbuild:x:1000:\n")
    (etc / "subuid").write_text("build:100000:65536\n")
    (etc / "subgid").write_text("build:100000:65536\n")
    for tool in ("newuidmap", "newgidmap"):
        _copy_with_libraries(Path(shutil.which(tool) or f"/usr/bin/{tool}"), jail)
    for d in ("home/build/work", "home/build/.cache"):
        (jail / d).mkdir(parents=True)
        os.chown(jail / d, 1000, 1000)
        os.chmod(jail / d, 0o700)
    os.chown(jail / "home/build", 1000, 1000)
    return jail


# Runs in the fresh mount and pid namespaces: what a container engine does before starting the
# image's entry point (the kernel refuses user namespaces to chrooted processes, so pivot_root).
ENTER_JAIL = """
import os, sys
from pybuildless.sandbox import _linux
jail, argv = sys.argv[1], sys.argv[2:]
for host, inside in (("/dev", "dev"), ("/sys", "sys")):
    os.makedirs(os.path.join(jail, inside), exist_ok=True)
    _linux.mount(host, os.path.join(jail, inside), None, _linux.MS_BIND | _linux.MS_REC)
_linux.mount(jail, jail, None, _linux.MS_BIND | _linux.MS_REC)
_linux.pivot_into(jail)
os.setgroups([1000])
os.setgid(1000)
os.setuid(1000)
os.chdir("/workspace")
os.execv(argv[0], argv)
"""


def run_as_build_user(jail: Path, argv: list[str], *, no_new_privs: bool = False):
    """``argv`` as uid/gid 1000 without capabilities, pivoted into ``jail`` in private mount and pid
    namespaces with /proc, /dev and /sys (what a container engine gives it), env from the image."""
    from tests.jail import executor_stage_config

    env = executor_stage_config(stage="rootless")["env"]
    prefix = ["setpriv", "--no-new-privs"] if no_new_privs else []
    return subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", f"--mount-proc={jail}/proc",
         *prefix, sys.executable, "-c", ENTER_JAIL, str(jail), *argv],
        env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=300, text=True, errors="replace")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="assembling the jail and chroot need root")
@pytest.mark.parametrize("no_new_privs", [False, True], ids=["full-map", "no-new-privs"])
def test_rootless_image_builds_as_uid_1000(tmp_path, registry, busybox_image, no_new_privs) -> None:
    """The rootless variant's filesystem builds as an unprivileged user: with newuidmap usable the
    full id map (chown to 1000 works); under no_new_privs, as allowPrivilegeEscalation: false
    gives it, the single map, and the image still carries the owner through the xattr."""
    from tests.buildkit import unpack

    jail = make_rootless_jail(tmp_path / "jail")
    # RUN chown to another id needs the full map; COPY --chown works with either
    chown = "" if no_new_privs else "mkdir /srv/more && chown 1000:1000 /srv/more && "
    (jail / "workspace" / "Dockerfile").write_text(ROOTLESS_DOCKERFILE.format(base=busybox_image, chown=chown))
    (jail / "workspace" / "f").write_text("x\n")
    ref = registry.ref(f"rootless/jail:{'nnp' if no_new_privs else 'full'}")
    proc = run_as_build_user(jail, ["/kaniko/executor", "--context", "dir:///workspace", "--destination", ref],
                             no_new_privs=no_new_privs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stderr
    assert "isolation: userns" in log
    assert ("single id map" if no_new_privs else "full id map") in log, log
    image = unpack(f"docker://{ref}", tmp_path / "u")
    tree = image.tree()
    assert tree["/srv/data/f"][2:4] == (1000, 1000) and "/gone" not in tree
    if not no_new_privs:
        assert tree["/srv/more"][2:4] == (1000, 1000)
    assert (image.rootfs / "whoami").read_text() == "0\n"
    first = (image.rootfs / "uidmap").read_text().split()
    assert first[:3] == (["0", "1000", "1"]), first
    # the scratch dir under the user's work dir is cleaned up
    assert os.listdir(jail / "home/build/work") == []
