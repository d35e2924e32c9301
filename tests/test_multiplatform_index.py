"""Several platforms in one build: an image index with one image per platform, read back by
skopeo (``inspect --raw`` for the index, ``--override-arch`` for each image), the arm64 image
run under the kernel's qemu-user-static handler; a BUILDPLATFORM stage built once for all."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from pybuildless.builder import binfmt
from pybuildless.image.descriptor import Platform
from tests.fixtures.foreign import arm64_layout, arm64_rootfs, multiarch_image  # noqa: F401
from tests.test_multiplatform import build, empty_binfmt, error_text, run_in, unpack_arch

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def raw(ref: str) -> tuple[bytes, dict]:
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], check=True,
                         capture_output=True, timeout=60).stdout
    return out, json.loads(out)


def platforms_of(index: dict) -> list[tuple[str, str]]:
    return [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]]


def test_amd64_and_arm64_in_one_index(tmp_path, registry, multiarch_image):
    assert binfmt.emulator_for(Platform.parse("linux/arm64")) is not None, "run `make deps` (qemu-user-static)"
    ref, ref2 = registry.ref("mpi/app:1"), registry.ref("mpi/app:also")
    dockerfile = f"FROM {multiarch_image}\nARG TARGETARCH\nRUN echo \"$TARGETARCH $(uname -m)\" > /arch\nCMD [\"cat\", \"/arch\"]\n"
    proc = build(tmp_path, dockerfile, "--custom-platform", "linux/amd64,linux/arm64", "--destination", ref,
                 "--destination", ref2, "--digest-file", str(tmp_path / "digest"))
    body, index = raw(ref)
    assert index["mediaType"] == OCI_INDEX  # the base's images are OCI manifests
    assert platforms_of(index) == [("linux", "amd64"), ("linux", "arm64")]
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert (tmp_path / "digest").read_text() == digest
    assert raw(ref2)[0] == body
    assert digest in proc.stderr.decode() + proc.stdout.decode()
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        info = json.loads(subprocess.run(["skopeo", "--override-arch", arch, "inspect", "--tls-verify=false",
                                          f"docker://{ref}"], check=True, capture_output=True).stdout)
        assert (info["Architecture"], info["Os"]) == (arch, "linux")
        rootfs, config = unpack_arch(ref, arch, tmp_path / arch)
        assert (rootfs / "arch").read_text() == f"{arch} {machine}\n"
        assert run_in(rootfs, *config["config"]["Cmd"]) == f"{arch} {machine}\n"
        assert run_in(rootfs, "/bin/uname", "-m") == f"{machine}\n"  # the image runs on (an emulated) arch


def test_buildplatform_stage_built_once(tmp_path, registry, busybox_image):
    """The cross-compiling pattern needs no emulator; the BUILDPLATFORM stage runs once (same random
    bytes in both images), a stage that declares TARGETARCH runs once per platform."""
    dockerfile = f"""\
FROM --platform=$BUILDPLATFORM {busybox_image} AS tools
RUN head -c 16 /dev/urandom | od -An -tx1 > /nonce
FROM --platform=$BUILDPLATFORM {busybox_image} AS compile
ARG TARGETARCH
COPY --from=tools /nonce /nonce
RUN echo "$TARGETARCH $(uname -m)" > /artifact && head -c 16 /dev/urandom | od -An -tx1 >> /artifact
FROM scratch
COPY --from=tools /nonce /nonce
COPY --from=compile /artifact /artifact
"""
    ref = registry.ref("mpi/cross:1")
    proc = build(tmp_path, dockerfile, "--custom-platform", "linux/amd64,linux/arm64", "--destination", ref,
                 env=empty_binfmt(tmp_path))
    log = error_text(proc)
    # the platforms run side by side: whichever reaches the stage first builds it
    assert len(re.findall(r"stage tools: same inputs as for linux/(amd64|arm64), built once", log)) == 1
    assert "stage compile: same inputs" not in log
    _, index = raw(ref)
    assert platforms_of(index) == [("linux", "amd64"), ("linux", "arm64")]
    seen = {}
    for arch in ("amd64", "arm64"):
        rootfs, config = unpack_arch(ref, arch, tmp_path / arch)
        assert config["architecture"] == arch
        seen[arch] = ((rootfs / "nonce").read_text(), (rootfs / "artifact").read_text().splitlines())
    assert seen["amd64"][0] == seen["arm64"][0]
    assert seen["amd64"][1][0] == f"amd64 {os.uname().machine}" and seen["arm64"][1][0] == f"arm64 {os.uname().machine}"
    assert seen["amd64"][1][1] != seen["arm64"][1][1]


def test_index_in_layout_and_tarball(tmp_path, registry, busybox_image, multiarch_image):
    """--oci-layout-path and --tar-path hold the index; docker load's manifest.json has each image,
    the destination's tag on the host's. The digest file names the index."""
    layout, tar = tmp_path / "layout", tmp_path / "image.tar"
    dockerfile = f"FROM {multiarch_image}\nCOPY f /f\n"
    build(tmp_path, dockerfile, "--platform", "linux/arm64,linux/amd64", "--no-push",  # BuildKit's spelling
          "--destination", "example.com/app:2", "--oci-layout-path", str(layout), "--tar-path", str(tar),
          "--digest-file", str(tmp_path / "digest"), files={"f": "x"})
    body = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:latest"], check=True,
                          capture_output=True).stdout
    index = json.loads(body)
    assert platforms_of(index) == [("linux", "arm64"), ("linux", "amd64")]
    assert (tmp_path / "digest").read_text() == "sha256:" + hashlib.sha256(body).hexdigest()
    arm = json.loads(subprocess.run(["skopeo", "--override-arch", "arm64", "inspect", f"oci:{layout}:latest"],
                                    check=True, capture_output=True).stdout)
    assert arm["Architecture"] == "arm64"
    with tarfile.open(tar) as t:
        top = json.loads(t.extractfile("index.json").read())
        assert top["manifests"][0]["digest"] == (tmp_path / "digest").read_text()
        docker = json.loads(t.extractfile("manifest.json").read())
        assert len(docker) == 2
        configs = [json.loads(t.extractfile(entry["Config"]).read()) for entry in docker]
        tagged = [c["architecture"] for c, e in zip(configs, docker) if e["RepoTags"]]
        assert tagged == [Platform.host().architecture] and docker[[c["architecture"] for c in configs].index(
            Platform.host().architecture)]["RepoTags"] == ["example.com/app:2"]


def test_docker_media_types_give_a_manifest_list(tmp_path, registry, multiarch_image):
    docker_base = registry.ref("base/busybox-multi-docker:latest")
    subprocess.run(["skopeo", "copy", "--all", "--format", "v2s2", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{multiarch_image}", f"docker://{docker_base}"], check=True, capture_output=True)
    ref = registry.ref("mpi/docker:1")
    build(tmp_path, f"FROM {docker_base}\nCOPY f /f\n", "--custom-platform", "linux/amd64,linux/arm64",
          "--destination", ref, files={"f": "x"})
    _, index = raw(ref)
    assert index["mediaType"] == DOCKER_LIST
    assert {m["mediaType"] for m in index["manifests"]} == {"application/vnd.docker.distribution.manifest.v2+json"}


def test_one_platform_without_a_base_image_fails_the_whole_build(tmp_path, registry, busybox_image):
    """The host-only busybox base has no arm64 image: nothing is pushed for any platform."""
    ref = registry.ref("mpi/partial:1")
    proc = build(tmp_path, f"FROM {busybox_image}\nCOPY f /f\n", "--custom-platform", "linux/amd64,linux/arm64",
                 "--destination", ref, files={"f": "x"}, check=False)
    text = error_text(proc)
    assert proc.returncode != 0 and "Traceback" not in text
    assert f"base image {busybox_image} has no image for platform linux/arm64" in text
    missing = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                             capture_output=True)
    assert missing.returncode != 0


def test_docker_load_reads_each_platform_image(tmp_path, dockerd, multiarch_image):
    """Docker 20.10's `docker load` reads manifest.json (not the index): both images load, the
    tag lands on the host's platform image, the arm64 one is there by its image ID."""
    tar = tmp_path / "image.tar"
    build(tmp_path, f"FROM {multiarch_image}\nCOPY f /f\n", "--custom-platform", "linux/amd64,linux/arm64",
          "--no-push", "--destination", "example.com/mp/load:1", "--tar-path", str(tar), files={"f": "x"})
    with tarfile.open(tar) as t:
        docker = json.loads(t.extractfile("manifest.json").read())
        ids = {json.loads(t.extractfile(e["Config"]).read())["architecture"]: "sha256:" + e["Config"].split("/")[-1]
               for e in docker}
    dockerd.docker("load", "-i", str(tar))
    tagged = dockerd.docker("image", "inspect", "-f", "{{.Id}} {{.Architecture}}", "example.com/mp/load:1")
    assert tagged.stdout.decode().split() == [ids[Platform.host().architecture], Platform.host().architecture]
    other = dockerd.docker("image", "inspect", "-f", "{{.Architecture}} {{.RepoTags}}", ids["arm64"])
    assert other.stdout.decode().split() == ["arm64", "[]"]


def test_each_platform_has_its_own_cache_keys(tmp_path, registry, multiarch_image):
    """With the layer cache, a second build takes every RUN from the cache, each platform its own:
    the arm64 image never gets the amd64 step's layer (its /arch says aarch64)."""
    ref, cache = registry.ref("mpi/cached:1"), registry.ref("mpi/cache")
    dockerfile = f"FROM {multiarch_image}\nRUN uname -m > /arch\n"
    args = ("--custom-platform", "linux/amd64,linux/arm64", "--destination", ref, "--cache=true", "--cache-repo", cache)
    build(tmp_path / "first", dockerfile, *args)
    first = raw(ref)[0]
    second = build(tmp_path / "second", dockerfile, *args)
    log = error_text(second)
    assert raw(ref)[0] == first  # the same layers, configs and index
    assert log.count("from cache, layer") == 2, log  # the RUN of each platform
    assert "done in" not in log
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        rootfs, _ = unpack_arch(ref, arch, tmp_path / arch)
        assert (rootfs / "arch").read_text() == f"{machine}\n"


def test_stage_from_a_shared_stage_reads_its_own_target_args(tmp_path, registry, busybox_image):
    """``FROM <shared stage>`` then ``ARG TARGETARCH``: the shared parent is built once, the child
    (the final stage, built per target) sees its own platform's value and is labelled with it."""
    dockerfile = f"""\
FROM --platform=$BUILDPLATFORM {busybox_image} AS base
RUN head -c 8 /dev/urandom | od -An -tx1 > /nonce
FROM base
ARG TARGETARCH
RUN echo "$TARGETARCH" > /target
"""
    ref = registry.ref("mpi/child:1")
    proc = build(tmp_path, dockerfile, "--custom-platform", "linux/amd64,linux/arm64", "--destination", ref,
                 env=empty_binfmt(tmp_path))
    assert len(re.findall(r"stage base: same inputs as for linux/(amd64|arm64), built once", error_text(proc))) == 1
    nonces = set()
    for arch in ("amd64", "arm64"):
        rootfs, config = unpack_arch(ref, arch, tmp_path / arch)
        assert (rootfs / "target").read_text() == f"{arch}\n" and config["architecture"] == arch
        nonces.add((rootfs / "nonce").read_text())
    assert len(nonces) == 1


def test_one_job_builds_the_platforms_in_turn(tmp_path, registry, multiarch_image):
    """--jobs 1: the platforms one after another, their output as it comes, the same index."""
    ref = registry.ref("mpi/serial:1")
    proc = build(tmp_path, f"FROM {multiarch_image}\nCOPY f /f\n", "--custom-platform", "linux/arm64,linux/amd64",
                 "--destination", ref, "--jobs", "1", files={"f": "x"})
    log = error_text(proc)
    assert log.index("--- platform linux/arm64 ---") < log.index("--- platform linux/amd64 ---")
    assert platforms_of(raw(ref)[1]) == [("linux", "arm64"), ("linux", "amd64")]


def test_a_base_needed_by_every_platform_is_pulled_once(tmp_path, registry, busybox_image):
    """A per-target BUILDPLATFORM stage uses the same base for each target: its layer is downloaded
    once for the whole build (platforms in turn here, so the second finds it verified on disk)."""
    dockerfile = f"FROM --platform=$BUILDPLATFORM {busybox_image} AS build\nARG TARGETARCH\nRUN echo $TARGETARCH > /t\n" \
                 "FROM scratch\nCOPY --from=build /t /t\n"
    # the blob path: with the layer store, tests/test_store_roundtrips.py counts the base's requests
    proc = build(tmp_path, dockerfile, "--custom-platform", "linux/amd64,linux/arm64", "--no-push", "--jobs", "1",
                 "--oci-layout-path", str(tmp_path / "layout"), "--no-layer-store", env=empty_binfmt(tmp_path))
    log = error_text(proc)
    assert log.count("pulled layer") == 1, log
    assert log.count("[stage 1/2] STEP 3/3: RUN") == 2  # still built for each target
