"""COPY/ADD results that must equal BuildKit's (Docker 20.10: BuildKit v0.8, moby/buildkit@eeb7b65ab7d6,
tonistiigi/fsutil@0834f99b7b85, moby/moby@v20.10.24 pkg/archive). Each test names the source lines
that decide the expected values; built through the real CLI, checked on the unpacked image."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import stat
import tarfile

import pytest

from tests.buildkit import executor, unpack, write_context

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]


def build(tmp_path, registry, busybox_image, dockerfile: str, files: dict | None = None, *, repo: str):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile.replace("BASE", busybox_image), **(files or {})})
    ref = registry.ref(repo)
    executor("-c", str(ctx), "-d", ref, cwd=tmp_path)
    return unpack(f"docker://{ref}", tmp_path / "u")


def meta(root, path: str) -> tuple[str, int, int, int]:
    st = os.lstat(root / path.lstrip("/"))
    kind = "d" if stat.S_ISDIR(st.st_mode) else "f" if stat.S_ISREG(st.st_mode) else "l"
    return kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_directory_source_copies_contents_and_creates_destination_0755(tmp_path, registry, busybox_image):
    # fsutil copy/copy.go@0834f99b7b85: prepareTargetDir MkdirAll()s a missing destination with
    # 0755 and the --chown chowner (mkdir.go: Chown(path, nil, user) only when --chown is given),
    # then copy() applies no metadata to a directory it did not create (created=false), so the
    # source directory's own mode/owner and --chmod never reach it; an existing destination
    # keeps its metadata. Children get the source's metadata (or --chmod / --chown).
    image = build(tmp_path, registry, busybox_image, """FROM BASE AS deb
RUN mkdir -p /artifacts/x && echo 1 > /artifacts/f && chown -R 33:33 /artifacts && chmod 0750 /artifacts /artifacts/x
FROM BASE
COPY --from=deb /artifacts/ /usr/share/deb/
COPY --chmod=0700 tree/ /opt/private/
COPY --chown=1234:1234 tree/ /chowned/deep/
RUN mkdir -m 0711 /exist && chown 5:5 /exist
COPY --chown=77:77 tree/ /exist/
COPY --from=deb /artifacts /nosl
""", {"tree/a": "a\n", "tree/sub/b": "b\n"}, repo="fidelity/dirsrc:1")
    r = image.rootfs
    assert meta(r, "/usr/share/deb") == ("d", 0o755, 0, 0)
    assert meta(r, "/usr/share/deb/x") == ("d", 0o750, 33, 33)
    assert meta(r, "/usr/share/deb/f") == ("f", 0o644, 33, 33)
    assert meta(r, "/opt/private") == ("d", 0o755, 0, 0)
    assert meta(r, "/opt/private/a") == ("f", 0o700, 0, 0)
    assert meta(r, "/opt/private/sub") == ("d", 0o700, 0, 0)
    assert meta(r, "/chowned") == ("d", 0o755, 1234, 1234)  # created parents take --chown too
    assert meta(r, "/chowned/deep") == ("d", 0o755, 1234, 1234)
    assert meta(r, "/chowned/deep/sub/b") == ("f", 0o644, 1234, 1234)
    assert meta(r, "/exist") == ("d", 0o711, 5, 5)
    assert meta(r, "/exist/a") == ("f", 0o644, 77, 77)
    assert meta(r, "/nosl") == ("d", 0o755, 0, 0)
    assert sorted(os.listdir(r / "nosl")) == ["f", "x"]


def _tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, kind, mode, uid, data in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, uid, 1_600_000_000
            if kind == tarfile.REGTYPE:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)
    return buf.getvalue()


def test_add_archive_root_entry_is_not_applied(tmp_path, registry, busybox_image):
    # buildkit solver/llbsolver/file/unpack.go@eeb7b65ab7d6: MkdirAll(dest, 0755, chowner), then
    # chrootarchive.Untar; moby pkg/archive/archive.go@v20.10.24 Unpack: `if fi.IsDir() &&
    # hdr.Name == "." { continue }` (the destination exists), directories below are merged with
    # the archive's metadata, entries keep the archive's owners.
    archive = _tar([("./", tarfile.DIRTYPE, 0o700, 1234, b""), ("./sub/", tarfile.DIRTYPE, 0o711, 1234, b""),
                    ("./sub/f", tarfile.REGTYPE, 0o640, 1234, b"hello\n")])
    dot = _tar([(".", tarfile.DIRTYPE, 0o700, 99, b""), ("./g", tarfile.REGTYPE, 0o600, 99, b"g\n")])
    image = build(tmp_path, registry, busybox_image, """FROM BASE
RUN mkdir -m 0750 /existing && chown 3:3 /existing
ADD t.tar /dest/
ADD t.tar /existing/
ADD dot.tar /dot
""", {"t.tar": archive, "dot.tar": dot}, repo="fidelity/addroot:1")
    r = image.rootfs
    assert meta(r, "/dest") == ("d", 0o755, 0, 0)
    assert meta(r, "/dest/sub") == ("d", 0o711, 1234, 1234)
    assert meta(r, "/dest/sub/f") == ("f", 0o640, 1234, 1234)
    assert (r / "dest/sub/f").read_bytes() == b"hello\n"
    assert meta(r, "/existing") == ("d", 0o750, 3, 3)
    assert meta(r, "/existing/sub/f") == ("f", 0o640, 1234, 1234)
    assert meta(r, "/dot") == ("d", 0o755, 0, 0)
    assert meta(r, "/dot/g") == ("f", 0o600, 99, 99)


def test_add_unpacks_only_what_decompresses_to_a_tar(tmp_path, registry, busybox_image):
    # buildkit solver/llbsolver/file/unpack.go@eeb7b65ab7d6 isArchivePath: DecompressStream
    # (moby pkg/archive/archive.go@v20.10.24 DetectCompression: gzip, bzip2, xz magic; else
    # plain), then tar.Reader.Next() must succeed. Otherwise the file is copied as is.
    text = b"just some text\n"
    files = {
        "notatar.gz": gzip.compress(text, mtime=0),
        "notatar.bz2": bz2.compress(text),
        "empty.gz": gzip.compress(b"", mtime=0),
        "fake.tar": b"x" * 1024,
        "real.tar.gz": gzip.compress(_tar([("inner.txt", tarfile.REGTYPE, 0o644, 0, b"inner\n")]), mtime=0),
        "real.bz2": bz2.compress(_tar([("inner2.txt", tarfile.REGTYPE, 0o644, 0, b"inner2\n")])),
        "plain.tar": _tar([("inner3.txt", tarfile.REGTYPE, 0o644, 0, b"inner3\n")]),
    }
    image = build(tmp_path, registry, busybox_image, "FROM BASE\n" + "".join(f"ADD {n} /opt/raw/\n" for n in files),
                  files, repo="fidelity/addraw:1")
    raw = image.rootfs / "opt/raw"
    for name in ("notatar.gz", "notatar.bz2", "empty.gz", "fake.tar"):
        assert (raw / name).read_bytes() == files[name], name
        assert meta(image.rootfs, f"/opt/raw/{name}") == ("f", 0o644, 0, 0)
    assert sorted(os.listdir(raw)) == ["empty.gz", "fake.tar", "inner.txt", "inner2.txt", "inner3.txt",
                                      "notatar.bz2", "notatar.gz"]


def test_wildcards_match_names_with_brackets(tmp_path, registry, busybox_image):
    # fsutil copy/copy.go@0834f99b7b85 ResolveWildcards: filepath.Match(pattern, name) on each
    # directory entry; `*` matches the literal name "a[0].txt"; a literal-looking source with
    # brackets is itself a pattern ([0] is a class), and the one that matches nothing copies
    # nothing (AllowEmptyWildcard, dockerfile2llb/convert.go@eeb7b65ab7d6).
    files = {"a[0].txt": "bracket\n", "b.txt": "b\n"}
    image = build(tmp_path, registry, busybox_image, """FROM BASE
ADD *.txt /d/
COPY *.txt /c/
COPY a[[]0].txt /lit/
COPY a[0].txt b.txt /cls/
""", files, repo="fidelity/brackets:1")
    r = image.rootfs
    for d in ("d", "c"):
        assert sorted(os.listdir(r / d)) == ["a[0].txt", "b.txt"]
        assert (r / d / "a[0].txt").read_text() == "bracket\n"
    assert sorted(os.listdir(r / "lit")) == ["a[0].txt"]
    assert sorted(os.listdir(r / "cls")) == ["b.txt"]


def test_each_source_decides_its_destination_in_turn(tmp_path, registry, busybox_image):
    # buildkit dockerfile2llb/convert.go@eeb7b65ab7d6 dispatchCopyFileOp: one copy action per
    # source, the destination gets a trailing "/" only when the Dockerfile gave one (or "."),
    # and fsutil copy/copy.go@0834f99b7b85 prepareTargetDir puts a file *into* the destination
    # only when that is a directory at that moment. So one match means a file destination, and
    # several files without "/" overwrite each other (the last one wins).
    files = {"foo": "foo\n", "a": "a\n", "b": "b\n", "a1": "a1\n", "a2": "a2\n", "dir/inner": "d\n"}
    image = build(tmp_path, registry, busybox_image, """FROM BASE
COPY nomatch* foo /hello
ADD nomatch* foo /hello2
COPY a b /two
COPY a* /wild
COPY dir b /mixed
WORKDIR /w
COPY a b rel
COPY a b ./
""", files, repo="fidelity/dest:1")
    r = image.rootfs
    assert meta(r, "/hello") == ("f", 0o644, 0, 0) and (r / "hello").read_text() == "foo\n"
    assert meta(r, "/hello2")[0] == "f" and (r / "hello2").read_text() == "foo\n"
    assert (r / "two").read_text() == "b\n"
    assert (r / "wild").read_text() == "a2\n"
    assert sorted(os.listdir(r / "mixed")) == ["b", "inner"]
    assert (r / "w/rel").read_text() == "b\n"
    assert (r / "w/a").read_text() == "a\n" and (r / "w/b").read_text() == "b\n"


def test_fifos_are_not_copied(tmp_path, registry, busybox_image):
    # fsutil copy/copy.go@0834f99b7b85 copy(): regular files, dirs, symlinks and devices are
    # copied; anything else ends in errors.Wrapf(nil, ...) == nil, so a FIFO is skipped silently.
    image = build(tmp_path, registry, busybox_image, """FROM BASE AS s
RUN mkdir /real && mkfifo /real/fifo && echo x > /real/file
FROM BASE
COPY --from=s /real /copyreal/
""", repo="fidelity/fifo:1")
    assert sorted(os.listdir(image.rootfs / "copyreal")) == ["file"]


def test_octal_chmod_sets_permission_bits_only(tmp_path, registry, busybox_image):
    # fsutil copy/copy_linux.go@0834f99b7b85 copyFileInfo: m = (m &^ 0777) | (mode & 0777): the
    # source's setuid/setgid/sticky bits stay, those in the --chmod value are dropped.
    image = build(tmp_path, registry, busybox_image, """FROM BASE AS s
RUN echo x > /suid && chmod 4755 /suid && mkdir -m 1777 /stickydir && echo y > /stickydir/in
FROM BASE
COPY --chmod=4755 f /a
COPY --from=s --chmod=0644 /suid /b
COPY --from=s --chmod=0700 /stickydir /d/
""", {"f": "f\n"}, repo="fidelity/chmodbits:1")
    r = image.rootfs
    assert meta(r, "/a")[1] == 0o755
    assert meta(r, "/b")[1] == 0o4644
    assert meta(r, "/d")[1] == 0o755 and meta(r, "/d/in")[1] == 0o700


def test_a_symlink_destination_is_followed(tmp_path, registry, busybox_image):
    # fsutil copy/copy.go@0834f99b7b85 Copy: dst = fs.RootPath(dstRoot, dst) resolves the given
    # destination in the root, final symlink included, so the link's target gets the file; a
    # name appended to a directory destination (prepareTargetDir) is not resolved, and copy()
    # replaces a link found there (ensureEmptyFileTarget).
    image = build(tmp_path, registry, busybox_image, """FROM BASE
RUN echo old > /target && ln -s /target /link && ln -s /nowhere /dangling && mkdir /realdir && \\
    ln -s /realdir /dirlink && ln -s /target /realdir/x
COPY f /link
COPY f /dangling
COPY d /dirlink/
COPY f /dirlink
""", {"f": "new\n", "d/x": "dd\n"}, repo="fidelity/destlink:1")
    r = image.rootfs
    assert os.readlink(r / "link") == "/target" and (r / "target").read_text() == "new\n"
    assert os.readlink(r / "dangling") == "/nowhere" and (r / "nowhere").read_text() == "new\n"
    assert meta(r, "/realdir/x")[0] == "f" and (r / "realdir/x").read_text() == "dd\n"
    assert (r / "realdir/f").read_text() == "new\n" and os.readlink(r / "dirlink") == "/realdir"


def test_hardlinks_are_kept_within_one_source_only(tmp_path, registry, busybox_image):
    # fsutil copy/copy.go@0834f99b7b85: every source (and every wildcard match) is copied by its
    # own copy.Copy call with a new copier, whose inode map is what keeps hardlinks together.
    ctx_files = {"Dockerfile": "FROM BASE\nCOPY a.txt b.txt /two/\nCOPY *.txt /wild/\nCOPY dir /dir/\n"
                 .replace("BASE", busybox_image), "a.txt": "a\n", "dir/c": "c\n"}
    ctx = write_context(tmp_path / "ctx", ctx_files)
    os.link(ctx / "a.txt", ctx / "b.txt")
    os.link(ctx / "dir/c", ctx / "dir/d")
    ref = registry.ref("fidelity/hardlinks:1")
    executor("-c", str(ctx), "-d", ref, cwd=tmp_path)
    r = unpack(f"docker://{ref}", tmp_path / "u").rootfs
    for path in ("two/a.txt", "two/b.txt", "wild/a.txt", "wild/b.txt"):
        assert os.lstat(r / path).st_nlink == 1, path
    assert os.lstat(r / "dir/c").st_ino == os.lstat(r / "dir/d").st_ino


def test_context_files_lose_their_xattrs(tmp_path, registry, busybox_image):
    # Docker 20.10's BuildKit: a context file's user.* xattr is not in the image (its exporter,
    # moby pkg/archive@v20.10.24 ReadSecurityXattrToTarHeader, writes security.capability only,
    # and the context transfer does not bring that one either).
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nCOPY plain /x/\n", "plain": "p\n"})
    try:
        os.setxattr(ctx / "plain", "user.comment", b"kept?")
    except OSError:
        pytest.skip("this filesystem has no user xattrs")
    ref = registry.ref("fidelity/xattrs:1")
    executor("-c", str(ctx), "-d", ref, cwd=tmp_path)
    blobs = unpack(f"docker://{ref}", tmp_path / "u")
    layer_digest = blobs.manifest["layers"][-1]["digest"].split(":", 1)[1]
    with tarfile.open(tmp_path / "u/layout/blobs/sha256" / layer_digest) as t:
        headers = {m.name: m.pax_headers for m in t}
    assert headers.get("x/plain") == {}, headers
