"""Dockerfile semantics that must equal BuildKit's as Docker 20.10 runs it (BuildKit v0.8,
moby/buildkit@eeb7b65ab7d6; its context walk: tonistiigi/fsutil@0834f99b7b85 in docker/cli
v20.10.24). Each test names the source that decides the expected values; built through the
real CLI, checked on the unpacked image."""

from __future__ import annotations

import os
import stat

import pytest

from tests.buildkit import executor, unpack, write_context

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


def build(tmp_path, registry, busybox_image, dockerfile: str, files: dict | None = None, *, repo: str):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile.replace("BASE", busybox_image), **(files or {})})
    ref = registry.ref(repo)
    executor("-c", str(ctx), "-d", ref, cwd=tmp_path)
    return unpack(f"docker://{ref}", tmp_path / "u")


def test_json_form_followed_by_text_is_still_exec_form(tmp_path, registry, busybox_image):
    # frontend/dockerfile/parser/line_parsers.go@eeb7b65ab7d6 parseJSON: json.NewDecoder(rest).Decode
    # reads the first JSON value and ignores what follows; parseMaybeJSON (CMD, ENTRYPOINT, RUN,
    # SHELL) and parseMaybeJSONToList (COPY, ADD, VOLUME) take that array.
    image = build(tmp_path, registry, busybox_image, """FROM BASE
COPY ["a", "/j/"] trailing
ENTRYPOINT ["/bin/echo","hi"] trailing words
CMD ["a"] # x
HEALTHCHECK CMD ["/bin/true"] junk
""", {"a": "x\n"}, repo="fidelity/json:1")
    c = image.container
    assert c["Entrypoint"] == ["/bin/echo", "hi"]
    assert c["Cmd"] == ["a"]
    assert c["Healthcheck"]["Test"] == ["CMD", "/bin/true"]
    # dockerfile2llb/convert.go@eeb7b65ab7d6 dispatchCmd: every CMD sets ArgsEscaped (omitempty)
    assert c["ArgsEscaped"] is True
    assert sorted(os.listdir(image.rootfs / "j")) == ["a"]
    assert image.run().stdout == b"hi a\n"


def test_arg_without_value_keeps_the_parent_stage_value(tmp_path, registry, busybox_image):
    # dockerfile2llb/convert.go@eeb7b65ab7d6: a stage FROM another starts from its LLB state
    # (d.state = d.base.state), whose env holds the parent's ARG values (dispatchArg AddEnv()s
    # a value); an ARG with no value of its own (no default, build-arg or meta ARG) adds
    # nothing, so what is in scope stays. ARGs never reach the image config's Env.
    image = build(tmp_path, registry, busybox_image, """FROM BASE AS parent
ARG FOO=123
ARG BAR=abc
ENV E1=env1
FROM parent AS child
ARG FOO
RUN echo "FOO=$FOO BAR=$BAR E1=$E1" > /out
ARG BAR=override
RUN echo "BAR=$BAR" > /out2
ARG BAR
RUN echo "again BAR=$BAR" > /out3
FROM parent
RUN echo "noarg FOO=$FOO" > /out4
COPY --from=child /out /out2 /out3 /
""", repo="fidelity/argparent:1")
    r = image.rootfs
    assert (r / "out").read_text() == "FOO=123 BAR=abc E1=env1\n"
    assert (r / "out2").read_text() == "BAR=override\n"
    assert (r / "out3").read_text() == "again BAR=override\n"
    assert (r / "out4").read_text() == "noarg FOO=123\n"
    assert image.container["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                      "E1=env1"]


def test_workdir_dirs_belong_to_user_read_as_chown(tmp_path, registry, busybox_image):
    # dockerfile2llb/convert.go@eeb7b65ab7d6 dispatchWorkdir: llb.Mkdir(wd, 0755, WithParents,
    # WithUser(config.User)); client/llb/fileop.go WithUser parses a numeric user as an id, and
    # solver/llbsolver/file/user_linux.go readUser gives a bare id the same gid (ByID:
    # UID=GID=id, passwd or not), a name its passwd uid/gid, "uid:gid" both.
    image = build(tmp_path, registry, busybox_image, """FROM BASE
RUN echo "odd:x:2000:100::/:/bin/sh" >> /etc/passwd
USER 4242
WORKDIR /w/x
USER 2000
WORKDIR /odd/num
USER odd
WORKDIR /odd/name
USER 4242:7
WORKDIR /grp
USER root
WORKDIR /rootdir
""", repo="fidelity/workdir:1")
    def owner(path):
        st = os.lstat(image.rootfs / path)
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    assert owner("w") == (0o755, 4242, 4242)
    assert owner("w/x") == (0o755, 4242, 4242)
    assert owner("odd/num") == (0o755, 2000, 2000)
    assert owner("odd/name") == (0o755, 2000, 100)
    assert owner("grp") == (0o755, 4242, 7)
    assert owner("rootdir") == (0o755, 0, 0)
    assert "ArgsEscaped" not in image.container  # no CMD in this Dockerfile: not set


def test_dockerignore_exceptions_follow_the_context_walk(tmp_path, registry, busybox_image):
    # tonistiigi/fsutil walker.go@0834f99b7b85 (docker/cli v20.10.24 sends the context with it):
    # an excluded directory is skipped unless a "!" pattern's text + "/" starts with its path +
    # "/"; then the directory itself is sent and its children are matched one by one
    # (docker/docker pkg/fileutils PatternMatcher.Matches, last match wins).
    files = {
        ".dockerignore": "docs/**/draft*\n!docs/**/draft-keep.md\nempty\n!empty/nothere.md\nskipme\n!skipme/keepdir\n",
        "docs/drafts/draft-keep.md": "1\n", "docs/drafts/draft-x.md": "2\n", "docs/draft-top.md": "3\n",
        "docs/draft-keep.md": "4\n", "docs/other/deep/draft-keep.md": "5\n", "docs/other/readme": "6\n",
        "empty/sub/f": "7\n", "skipme/keepdir/k": "8\n", "skipme/x": "9\n",
    }
    image = build(tmp_path, registry, busybox_image, "FROM BASE\nCOPY . /ctx/\nCOPY docs/* /star/\n", files,
                  repo="fidelity/ignore:1")
    ctx = image.rootfs / "ctx"
    found = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*"))
    assert found == [".dockerignore", "Dockerfile", "docs", "docs/draft-keep.md", "docs/other", "docs/other/deep",
                     "docs/other/deep/draft-keep.md", "docs/other/readme", "empty", "skipme", "skipme/keepdir",
                     "skipme/keepdir/k"]
    assert sorted(os.listdir(image.rootfs / "star")) == ["deep", "draft-keep.md", "readme"]
    bad = write_context(tmp_path / "bad", {**files, "Dockerfile": f"FROM {busybox_image}\n"
                                           "COPY docs/drafts/draft-keep.md /x\n"})
    proc = executor("-c", str(bad), "-d", registry.ref("fidelity/ignore:bad"), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and b"docs/drafts/draft-keep.md" in proc.stderr


def test_run_mount_points_stay_as_empty_directories(tmp_path, registry, busybox_image):
    # Docker 20.10's BuildKit leaves the directories it made as mount points (targets and
    # missing parents) in the step's layer, empty, 0755 0:0; what was mounted never gets there.
    image = build(tmp_path, registry, busybox_image, """FROM BASE
RUN --mount=type=bind,target=/ctx cat /ctx/f > /copied
RUN --mount=type=cache,target=/var/cache/app echo c > /var/cache/app/c
RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t
""", {"f": "from context\n"}, repo="fidelity/mountpoints:1")
    r = image.rootfs
    assert (r / "copied").read_text() == "from context\n"
    for path in ("ctx", "var", "var/cache", "var/cache/app", "scratch"):
        st = os.lstat(r / path)
        assert stat.S_ISDIR(st.st_mode) and (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0), path
    assert os.listdir(r / "ctx") == [] and os.listdir(r / "var/cache/app") == [] and os.listdir(r / "scratch") == []


def test_every_run_copy_add_and_workdir_adds_a_layer(tmp_path, registry, busybox_image):
    # dockerfile2llb/convert.go@eeb7b65ab7d6: dispatchRun, dispatchCopy and dispatchWorkdir (for a
    # directory other than /) commit their step with a layer, changed or not; ENV, LABEL... none.
    image = build(tmp_path, registry, busybox_image, """FROM BASE
RUN true
ENV A=1
WORKDIR /tmp
LABEL l=1
COPY f /f
WORKDIR /
WORKDIR /new
RUN echo x > /x
""", {"f": "f\n"}, repo="fidelity/layers:1")
    history = image.config["history"][1:]  # after the base's own entry
    assert [not h.get("empty_layer", False) for h in history] == [True, False, True, False, True, False, True, True]
    assert len(image.manifest["layers"]) == 1 + 5
