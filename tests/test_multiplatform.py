"""One platform that is not the host's: BuildKit's platform ARGs, bases chosen per platform,
foreign RUN steps under a binfmt_misc emulator (Debian's qemu-user-static) or a clear refusal.

Expected values: the automatic ARGs as BuildKit defines them (moby/buildkit
frontend/dockerfile/dockerfile2llb/platform.go@73ed6825 defaultArgs: BUILDPLATFORM is the
worker's, TARGETPLATFORM the requested one); architectures as skopeo reads them; ``uname -m``
as the arm64 kernel interface reports it under qemu (``aarch64``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pybuildless.builder import binfmt
from pybuildless.image.descriptor import Platform
from tests.buildkit import executor, skopeo_inspect, write_context
from tests.fixtures.foreign import amd64_only_image, arm64_image, arm64_layout, arm64_rootfs, multiarch_image  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]

HOST = str(Platform.host())


def build(tmp_path: Path, dockerfile: str, *args: str, files: dict | None = None, env: dict | None = None,
          check: bool = True):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, **(files or {})})
    return executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), *args, cwd=tmp_path,
                    env=env, check=check)


def unpack_arch(ref: str, arch: str, work: Path) -> tuple[Path, dict]:
    """The image of ``arch`` under ``ref`` (skopeo picks it), unpacked by umoci: (rootfs, config)."""
    layout = work / "layout"
    work.mkdir(parents=True, exist_ok=True)
    for argv in (["skopeo", "--override-arch", arch, "copy", "--src-tls-verify=false", f"docker://{ref}",
                  f"oci:{layout}:img"], ["umoci", "unpack", "--image", f"{layout}:img", str(work / "bundle")]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{argv[0]}: {done.stderr}"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((layout / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    return work / "bundle" / "rootfs", config


def run_in(rootfs: Path, *argv: str) -> str:
    """Run a program of the unpacked image chrooted (a foreign one through the kernel's emulator)."""
    out = subprocess.run([shutil.which("chroot"), str(rootfs), *argv], capture_output=True, timeout=60, env={"PATH": "/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.decode()


def empty_binfmt(tmp_path: Path) -> dict:
    """The handler check pointed at an empty directory: as on a host without any emulator."""
    directory = tmp_path / "no-binfmt"
    directory.mkdir(exist_ok=True)
    return {binfmt.BINFMT_DIR_ENV: str(directory)}


def error_text(proc) -> str:
    return proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")


# -- phase 1: the automatic platform ARGs ------------------------------------------------------


def test_platform_args_target_and_build(tmp_path, registry, busybox_image):
    """TARGET* name the requested platform, BUILD* the host; global (usable in FROM) and imported
    into a stage by ``ARG NAME``; a ``FROM --platform=$BUILDPLATFORM`` stage runs natively."""
    dockerfile = f"""\
ARG BASE={busybox_image}
FROM --platform=$BUILDPLATFORM $BASE AS build
ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT
RUN echo "$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT|$BUILDPLATFORM|$BUILDOS|$BUILDARCH|$BUILDVARIANT|$(uname -m)" > /out
FROM scratch AS out-arm
COPY --from=build /out /out
FROM scratch AS out-arm64
COPY --from=build /out /wrong
FROM out-${{TARGETARCH}}
LABEL unset="${{TARGETARCH:-none}}"
"""
    ref = registry.ref("mp/args:1")
    build(tmp_path, dockerfile, "--custom-platform", "linux/arm/v7", "--destination", ref,
          env=empty_binfmt(tmp_path))
    rootfs, config = unpack_arch(ref, "arm", tmp_path / "u")
    host = Platform.host()
    assert (rootfs / "out").read_text().strip() == (
        f"linux/arm/v7|linux|arm|v7|{HOST}|linux|{host.architecture}|{host.variant}|{os.uname().machine}")
    assert (config["architecture"], config["os"], config.get("variant")) == ("arm", "linux", "v7")
    assert config["config"]["Labels"] == {"unset": "none"}  # not declared in the stage: not visible


# -- phase 2: the base for the requested platform ------------------------------------------------


def test_single_platform_base_for_another_platform_is_refused(tmp_path, amd64_only_image):
    """An amd64-only base is never relabelled arm64: the build fails naming the base and what it has."""
    proc = build(tmp_path, f"FROM {amd64_only_image}\nRUN true\n", "--custom-platform", "linux/arm64",
                 "--no-push", "--tar-path", str(tmp_path / "out.tar"), check=False)
    text = error_text(proc)
    assert proc.returncode != 0 and "Traceback" not in text
    assert f"base image {amd64_only_image} has no image for platform linux/arm64 (it has: linux/amd64)" in text
    assert "Dockerfile:1" in text
    assert not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize("spelling", ["linux/arm64", "linux/arm64/v8", "linux/aarch64"])
def test_index_base_resolves_the_requested_platform(tmp_path, registry, multiarch_image, arm64_layout, spelling):
    """The arm64 entry of the base's index (arm64/v8 and aarch64 normalised as containerd does)."""
    ref = registry.ref("mp/resolve:1")
    build(tmp_path, f"FROM {multiarch_image}\nCOPY f /f\n", "--custom-platform", spelling, "--destination", ref,
          files={"f": "x"})
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                                    check=True, capture_output=True).stdout)
    arm_manifest = json.loads((arm64_layout / "blobs/sha256" / json.loads((arm64_layout / "index.json").read_text())
                                ["manifests"][0]["digest"].split(":")[1]).read_text())
    assert raw["layers"][0]["digest"] == arm_manifest["layers"][0]["digest"]
    info = skopeo_inspect(ref)
    assert (info["Architecture"], info["Os"]) == ("arm64", "linux")


def test_index_without_the_platform_lists_what_it_has(tmp_path, multiarch_image):
    proc = build(tmp_path, f"FROM {multiarch_image}\nCOPY f /f\n", "--custom-platform", "linux/s390x", "--no-push",
                 files={"f": "x"}, check=False)
    text = error_text(proc)
    assert proc.returncode != 0 and "Traceback" not in text
    assert (f"base image {multiarch_image} has no image for platform linux/s390x "
            "(it has: linux/amd64, linux/arm64)") in text


# -- phase 3: RUN for a foreign platform ---------------------------------------------------------


def test_foreign_run_under_the_hosts_emulator(tmp_path, registry, arm64_image):
    """With qemu-user-static's F-flag handler the arm64 RUN runs in the sandbox (seccomp filter
    for the host arch: qemu makes host syscalls) and sees an aarch64 machine."""
    assert binfmt.emulator_for(Platform.parse("linux/arm64")) is not None, (
        "no binfmt_misc handler for arm64 with the F flag: run `make deps` (qemu-user-static)")
    ref = registry.ref("mp/foreign-run:1")
    build(tmp_path, f"FROM {arm64_image}\nRUN uname -m > /arch && busybox | head -1 > /version\n",
          "--custom-platform", "linux/arm64", "--destination", ref)
    rootfs, config = unpack_arch(ref, "arm64", tmp_path / "u")
    assert (rootfs / "arch").read_text() == "aarch64\n"
    assert config["architecture"] == "arm64"
    assert run_in(rootfs, "/bin/uname", "-m") == "aarch64\n"  # the image runs, as arm64, under qemu


def test_foreign_run_without_emulator_fails_before_anything_starts(tmp_path):
    """No handler: one error naming stage, line and remedy, before the base is even looked up (the
    base here does not exist: an error about it would mean the check came too late)."""
    dockerfile = ("FROM --platform=$BUILDPLATFORM 127.0.0.1:9/none/tools:1 AS tools\nRUN true\n"
                  "FROM 127.0.0.1:9/none/base:1 AS app\nCOPY --from=tools /etc /etc\nRUN echo hi\n")
    started = time.monotonic()
    proc = build(tmp_path, dockerfile, "--custom-platform", "linux/arm64", "--no-push", env=empty_binfmt(tmp_path),
                 check=False)
    elapsed = time.monotonic() - started
    text = error_text(proc)
    assert proc.returncode != 0 and "Traceback" not in text
    line = next(ln for ln in text.splitlines() if "binfmt_misc" in ln)
    assert "Dockerfile:5" in line and "stage 'app'" in line and "linux/arm64" in line
    assert "qemu-user-static" in line
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert errors == [line]  # the only error: the base was not looked up (it would fail to connect)
    assert "connect" not in text.lower()
    assert elapsed < 3.0, elapsed  # interpreter start-up included; the check itself reads a directory


def test_cross_compiling_stage_needs_no_emulator(tmp_path, registry, busybox_image, arm64_image):
    """Only BUILDPLATFORM stages RUN: an arm64 image without any binfmt handler."""
    dockerfile = f"""\
FROM --platform=$BUILDPLATFORM {busybox_image} AS build
ARG TARGETARCH
RUN echo "for $TARGETARCH on $(uname -m)" > /artifact
FROM {arm64_image}
COPY --from=build /artifact /artifact
"""
    ref = registry.ref("mp/cross:1")
    build(tmp_path, dockerfile, "--custom-platform", "linux/arm64", "--destination", ref, env=empty_binfmt(tmp_path))
    rootfs, config = unpack_arch(ref, "arm64", tmp_path / "u")
    assert (rootfs / "artifact").read_text() == f"for arm64 on {os.uname().machine}\n"
    assert config["architecture"] == "arm64"
    inspected = skopeo_inspect(ref)
    assert inspected["Architecture"] == "arm64"


def test_handler_matching_reads_real_handler_files(tmp_path):
    """The kernel's handler format, as qemu-user-static's binfmt.d line registers it."""
    d = tmp_path / "binfmt"
    d.mkdir()
    (d / "status").write_text("enabled\n")
    (d / "qemu-aarch64").write_text(
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\n"
        "magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n")
    (d / "qemu-arm").write_text(
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\nflags: PO\noffset 0\n"
        "magic 7f454c4601010100000000000000000002002800\nmask ffffffffffffff00fffffffffffffffffeffffff\n")
    assert binfmt.emulator_for(Platform.parse("linux/arm64"), d).name == "qemu-aarch64"
    assert binfmt.emulator_for(Platform.parse("linux/arm/v7"), d) is None  # no F flag: useless in a chroot
    assert binfmt.emulator_for(Platform.parse("linux/riscv64"), d) is None
    (d / "status").write_text("disabled\n")
    assert binfmt.emulator_for(Platform.parse("linux/arm64"), d) is None


def test_platform_list_flag():
    from pybuildless.builder.platforms import parse_platforms
    from pybuildless.errors import UsageError

    assert parse_platforms("linux/amd64,linux/arm64/v8,linux/aarch64, linux/arm") == [
        Platform("linux", "amd64"), Platform("linux", "arm64"), Platform("linux", "arm", "v7")]
    assert parse_platforms(None) == [Platform.host()]
    with pytest.raises(UsageError, match="--custom-platform 'linux/amd64,': invalid platform ''"):
        parse_platforms("linux/amd64,")


def test_foreign_onbuild_run_without_emulator_is_refused_by_name(tmp_path, registry, arm64_image):
    """A RUN only a base's ONBUILD trigger adds is not in the Dockerfile: it is refused when reached,
    with the same remedy, never an exec format error."""
    base = registry.ref("mp/onbuild-base:1")
    build(tmp_path / "a", f"FROM {arm64_image}\nONBUILD RUN echo triggered\n", "--custom-platform", "linux/arm64",
          "--destination", base, env=empty_binfmt(tmp_path))
    proc = build(tmp_path / "b", f"FROM {base} AS app\nCOPY f /f\n", "--custom-platform", "linux/arm64",
                 "--no-push", files={"f": "x"}, env=empty_binfmt(tmp_path), check=False)
    text = error_text(proc)
    assert proc.returncode != 0 and "Traceback" not in text
    assert "exec format error" not in text.lower()
    line = next(ln for ln in text.splitlines() if "binfmt_misc" in ln)
    assert "Dockerfile:1" in line and "stage 'app' runs RUN for linux/arm64" in line and "qemu-user-static" in line


def test_several_platforms_take_turns_in_place(tmp_path):
    """In-place (Kaniko) mode has one root: the platforms are built one after another, whatever
    --jobs says (the executor image's real runs are in tests/test_examples_multiplatform.py)."""
    import threading

    from pybuildless.builder.multiplatform import build_platforms
    from pybuildless.builder.options import BuildOptions
    from pybuildless.builder.progress import Progress

    running, seen = [], []
    lock = threading.Lock()

    def execute(prepared, options, work, progress, shared):
        with lock:
            running.append(prepared)
            seen.append((prepared, len(running), options.jobs))
        threading.Event().wait(0.05)
        with lock:
            running.remove(prepared)
        return prepared

    platforms = [Platform("linux", "amd64"), Platform("linux", "arm64")]
    results = build_platforms(BuildOptions(isolation="inplace", jobs=8), tmp_path, platforms, Progress(),
                              str, execute)
    assert results == ["linux/amd64", "linux/arm64"]
    assert [count for _, count, _ in seen] == [1, 1]
