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
