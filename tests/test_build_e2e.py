"""End-to-end builds: the executor against the real registry, checked with skopeo, umoci, and by
running the images (chroot into the unpacked rootfs with the image's config)."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
import tarfile

import pytest

from tests.buildkit import executor, skopeo_inspect, unpack, write_context

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


def build_push(tmp_path, registry, dockerfile: str, files: dict | None = None, *args: str, repo: str):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, **(files or {})})
    ref = registry.ref(repo)
    proc = executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", ref, *args,
                    cwd=tmp_path)
    return ref, proc


def layer_members(tmp_path, ref: str) -> list[list[tarfile.TarInfo]]:
    """Every layer's tar headers, via skopeo (our push, read by another tool)."""
    out = tmp_path / "dir"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{out}"],
                   check=True, capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    layers = []
    for desc in manifest["layers"]:
        with tarfile.open(out / desc["digest"].split(":", 1)[1], "r:*") as t:
            layers.append(t.getmembers())
    return layers


def test_multistage_with_every_instruction(tmp_path, registry, busybox_image):
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as t:
        data = b"from the archive\n"
        info = tarfile.TarInfo("pkg/readme.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    dockerfile = f"""\
ARG BASE={busybox_image}
FROM $BASE AS builder
ARG WHO=world
ENV GREETING="hello" TARGET_DIR=/opt/app
WORKDIR $TARGET_DIR
COPY src/ ./src/
ADD pkg.tar.gz /opt/
RUN echo "$GREETING $WHO" > message && cat src/part.txt >> message && cat /opt/pkg/readme.txt >> message

FROM ${{BASE}}
LABEL org.example.name="demo app" version=1
MAINTAINER someone@example.com
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --retries=2 CMD ["true"]
ONBUILD RUN echo downstream
SHELL ["/bin/sh", "-c"]
COPY --from=builder /opt/app/message /srv/message
COPY --chown=user:user --chmod=0750 run.sh /srv/run.sh
WORKDIR /srv
USER user
ENTRYPOINT ["/srv/run.sh"]
CMD ["--flag"]
"""
    files = {"src/part.txt": "from the context\n", "pkg.tar.gz": archive.getvalue(),
             "run.sh": '#!/bin/sh\necho "args: $*"; cat /srv/message; id -u\n'}
    ref, _ = build_push(tmp_path, registry, dockerfile, files, "--build-arg", "WHO=tests", repo="e2e/every:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    c = image.container
    assert c["Labels"] == {"org.example.name": "demo app", "version": "1"}
    assert image.config["author"] == "someone@example.com"
    assert set(c["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    assert c["Volumes"] == {"/data": {}}
    assert c["StopSignal"] == "SIGINT"
    assert c["Healthcheck"]["Test"] == ["CMD", "true"] and c["Healthcheck"]["Retries"] == 2
    assert c["Healthcheck"]["Interval"] == 30_000_000_000
    assert c["OnBuild"] == ["RUN echo downstream"]
    assert c["WorkingDir"] == "/srv" and c["User"] == "user"
    assert c["Entrypoint"] == ["/srv/run.sh"] and c["Cmd"] == ["--flag"]
    assert not any(e.startswith("WHO=") for e in c["Env"]), "ARGs must not leak into Env"
    st = (image.rootfs / "srv/run.sh").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1000, 1000)
    result = image.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == ("args: --flag\nhello tests\nfrom the context\nfrom the archive\n1000\n")
    # history: one non-empty entry per layer, metadata steps marked empty
    history = image.config["history"]
    assert sum(1 for h in history if not h.get("empty_layer")) == len(image.manifest["layers"])
    assert any(h["created_by"].startswith("COPY --from=builder") for h in history)
    inspected = skopeo_inspect(ref)
    assert inspected["Layers"] == [d["digest"] for d in image.manifest["layers"]]


def test_deletions_whiteouts_and_opaque_directories(tmp_path, registry, busybox_image):
    dockerfile = f"""\
FROM {busybox_image} AS base
RUN mkdir -p /keep /gone/sub /redo && echo a > /gone/sub/f && echo old > /redo/old && echo k > /keep/k
FROM base
RUN rm -rf /gone && rm /keep/k && rm -rf /redo && mkdir /redo && echo new > /redo/new
"""
    ref, _ = build_push(tmp_path, registry, dockerfile, repo="e2e/whiteouts:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    assert not (image.rootfs / "gone").exists()
    assert (image.rootfs / "keep").is_dir() and not (image.rootfs / "keep/k").exists()
    assert sorted(os.listdir(image.rootfs / "redo")) == ["new"]
    last = [m.name for m in layer_members(tmp_path, ref)[-1]]
    assert "gone/.wh..wh..opq" not in last and any(n.endswith(".wh.gone") for n in last)
    assert not any(n.startswith("gone/") for n in last), "no whiteouts below a deleted directory"
    assert any(n.endswith(".wh.k") for n in last)
    assert any(n.endswith("redo/.wh..wh..opq") or n.endswith(".wh.old") for n in last)


def test_hardlinks_setuid_and_chown_by_name(tmp_path, registry, busybox_image):
    dockerfile = f"""\
FROM {busybox_image}
RUN echo data > /a && ln /a /b && cp /bin/busybox /suid && chmod 4755 /suid && \\
    echo "app:x:2000:2001::/home/app:/bin/sh" >> /etc/passwd && echo "appgrp:x:2001:" >> /etc/group
COPY --chown=app:appgrp owned.txt /owned.txt
COPY --chown=app owned.txt /owned2.txt
"""
    ref, _ = build_push(tmp_path, registry, dockerfile, {"owned.txt": "x"}, repo="e2e/links:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    a, b = (image.rootfs / "a").stat(), (image.rootfs / "b").stat()
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert stat.S_IMODE((image.rootfs / "suid").stat().st_mode) == 0o4755
    o = (image.rootfs / "owned.txt").stat()
    assert (o.st_uid, o.st_gid) == (2000, 2001)
    o2 = (image.rootfs / "owned2.txt").stat()
    assert (o2.st_uid, o2.st_gid) == (2000, 2001)
    names = [(m.name, m.type) for m in layer_members(tmp_path, ref)[1]]
    assert sum(1 for _, t in names if t == tarfile.LNKTYPE) == 1, names


def test_dockerignore_and_copy_rules(tmp_path, registry, busybox_image):
    dockerfile = f"""\
FROM {busybox_image}
COPY . /ctx/
COPY *.md /docs/
COPY nothing-matches-* /never/
"""
    files = {".dockerignore": "# comment\n*.log\nsecret/\n!secret/public.txt\n**/tmp\n",
             "app.py": "print()\n", "debug.log": "x", "secret/key": "k", "secret/public.txt": "p",
             "a/b/tmp": "t", "a/b/keep": "k", "README.md": "r", "CHANGES.md": "c"}
    ref, _ = build_push(tmp_path, registry, dockerfile, files, repo="e2e/ignore:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    ctx = image.rootfs / "ctx"
    listing = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*"))
    assert listing == sorted([".dockerignore", "CHANGES.md", "Dockerfile", "README.md", "a", "a/b", "a/b/keep",
                              "app.py", "secret", "secret/public.txt"])
    assert sorted(os.listdir(image.rootfs / "docs")) == ["CHANGES.md", "README.md"]
    assert not (image.rootfs / "never").exists()
    st = (ctx / "app.py").stat()
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_target_skips_unneeded_stages_and_build_args(tmp_path, registry, busybox_image):
    dockerfile = f"""\
FROM {busybox_image} AS broken
RUN exit 9
FROM {busybox_image} AS wanted
ARG FLAVOUR=plain
RUN echo "flavour=$FLAVOUR" > /flavour
FROM wanted AS final
RUN false
"""
    ref, proc = build_push(tmp_path, registry, dockerfile, None, "--target", "wanted", "--build-arg",
                           "FLAVOUR=spicy", "--build-arg", "UNUSED=1", repo="e2e/target:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    assert (image.rootfs / "flavour").read_text() == "flavour=spicy\n"
    assert b"UNUSED" in proc.stderr  # warned about
    assert b"exit 9" not in proc.stderr


def test_failing_run_propagates_exit_code(tmp_path, registry, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nRUN echo before\nRUN echo oops >&2; exit 42\n"})
    proc = executor("-c", str(ctx), "-d", registry.ref("e2e/fail:1"), cwd=tmp_path, check=False)
    assert proc.returncode == 42
    assert b"oops" in proc.stdout + proc.stderr
    assert b"Dockerfile:3" in proc.stderr and b"Traceback" not in proc.stderr
    # nothing was pushed
    probe = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.ref('e2e/fail:1')}"],
                           capture_output=True)
    assert probe.returncode != 0


def test_outputs_tarball_layout_and_digest_files(tmp_path, registry, busybox_image):
    dockerfile = f"FROM {busybox_image}\nRUN echo out > /out\nCMD [\"cat\", \"/out\"]\n"
    ref, _ = build_push(tmp_path, registry, dockerfile, None,
                        "--tar-path", str(tmp_path / "image.tar"), "--oci-layout-path", str(tmp_path / "layout"),
                        "--digest-file", str(tmp_path / "digest"),
                        "--image-name-with-digest-file", str(tmp_path / "names"),
                        "--image-name-tag-with-digest-file", str(tmp_path / "tags"), repo="e2e/outputs:v1")
    digest = (tmp_path / "digest").read_text()
    assert skopeo_inspect(ref)["Digest"] == digest
    assert (tmp_path / "names").read_text() == f"{ref.rsplit(':', 1)[0]}@{digest}\n"
    assert (tmp_path / "tags").read_text() == f"{ref}@{digest}\n"
    for source in (f"docker-archive:{tmp_path / 'image.tar'}", f"oci:{tmp_path / 'layout'}:latest"):
        image = unpack(source, tmp_path / source.split(":")[0].replace("-", ""))
        assert image.run().stdout == b"out\n"


def test_no_destination_writes_a_local_layout(tmp_path, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nRUN touch /x\n"})
    proc = executor("-c", str(ctx), "--insecure-registry", busybox_image.split("/")[0], cwd=tmp_path)
    layout = tmp_path / "pybuildless-image"
    assert str(layout).encode() in proc.stderr
    image = unpack(f"oci:{layout}:latest", tmp_path / "u")
    assert (image.rootfs / "x").exists()


def test_push_with_basic_auth_from_docker_config(tmp_path, registry_basic, busybox_image):
    auth = base64.b64encode(f"{registry_basic.username}:{registry_basic.password}".encode()).decode()
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker/config.json").write_text(json.dumps({"auths": {registry_basic.host: {"auth": auth}}}))
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nRUN echo authed > /a\n"})
    ref = registry_basic.ref("e2e/auth:1")
    proc = executor("-c", str(ctx), "-d", ref, "-v", "trace", cwd=tmp_path, env={"DOCKER_CONFIG": str(tmp_path / "docker")})
    assert registry_basic.password.encode() not in proc.stdout + proc.stderr
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", registry_basic.creds, f"docker://{ref}"],
                         capture_output=True, check=True)
    assert json.loads(out.stdout)["Digest"].startswith("sha256:")


def test_heredocs_in_run_and_copy(tmp_path, registry, busybox_image):
    dockerfile = f"""\
FROM {busybox_image}
ARG NAME=heredoc
RUN <<EOF
echo "script for $NAME" > /from-run
EOF
COPY <<-EOT /etc/greeting
	hello $NAME
	EOT
RUN <<'SCRIPT' sh
#!/bin/sh
echo shebang ok > /shebang
SCRIPT
"""
    ref, _ = build_push(tmp_path, registry, dockerfile, repo="e2e/heredoc:1")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    assert (image.rootfs / "from-run").read_text() == "script for heredoc\n"
    assert (image.rootfs / "etc/greeting").read_text() == "hello heredoc\n"
    assert (image.rootfs / "shebang").read_text() == "shebang ok\n"


@pytest.mark.parametrize("dockerfile,needle", [
    ("FROM {base}\nFROBNICATE x\n", b"Dockerfile:2"),
    ("FROM {base}\nCOPY missing.txt /\n", b"missing.txt"),
    ("FROM {base}\nCOPY --bogus=1 a /\n", b"Dockerfile:2"),
    ("FROM {base}\nUSER nobody-here\nRUN true\n", b"nobody-here"),
])
def test_bad_inputs_fail_cleanly(tmp_path, registry, busybox_image, dockerfile, needle):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile.format(base=busybox_image)})
    proc = executor("-c", str(ctx), "-d", registry.ref("e2e/bad:1"), "--work-dir", str(tmp_path), cwd=tmp_path,
                    check=False)
    assert proc.returncode != 0
    assert needle in proc.stderr, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert not list(tmp_path.glob("pybuildless-*")), "scratch left behind"


def test_bad_flags_fail_cleanly(tmp_path, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\n"})
    cases = ((["-c", str(ctx), "--target", "nope"], b"nope"), (["-c", str(ctx), "-d", "UPPER/Case"], b"UPPER/Case"),
             (["--context", "gs://bucket/x"], b"--context"), (["-c", str(ctx), "--label", "novalue"], b"--label"))
    for args, needle in cases:
        proc = executor(*args, cwd=tmp_path, check=False)
        assert proc.returncode != 0 and needle in proc.stderr, (args, proc.stderr)
        assert b"Traceback" not in proc.stderr
