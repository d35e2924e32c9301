"""RUN --mount where nothing can be mounted (no mount namespace: an unprivileged container under
Docker's default seccomp profile): the mounts' content is copied in for the step and taken away
after it, so secrets still reach the step and never the root."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from pybuildless.errors import SandboxError
from pybuildless.sandbox import ChrootSandbox, Mount
from tests.test_sandbox import ENV, ROOT_USER, make_busybox_root

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the chroot sandbox needs root")


def tree(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            st = os.lstat(path)
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, data)
    return out


def run(box: ChrootSandbox, script: str, mounts: list[Mount]) -> tuple[int, str]:
    buf = io.BytesIO()
    code = box.run(["/bin/sh", "-c", script], env=ENV, cwd="/", user=ROOT_USER, stdout=buf.write, mounts=mounts).exit_code
    return code, buf.getvalue().decode()


def test_secret_bind_cache_and_tmpfs_are_copied_in_and_taken_away(tmp_path: Path) -> None:
    root = make_busybox_root(tmp_path / "root")
    secret = tmp_path / "secret"
    secret.write_text("hunter2\n")
    secret.chmod(0o400)
    os.chown(secret, 1234, 0)
    context = tmp_path / "ctx"
    (context / "sub").mkdir(parents=True)
    (context / "sub" / "f.txt").write_text("from the context\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "old").write_text("kept from last time\n")
    before = tree(root)
    mounts = [Mount("/run/secrets/token", secret, readonly=True), Mount("/src", context, readonly=True),
              Mount("/var/cache/app", cache), Mount("/scratch", kind="tmpfs")]
    with ChrootSandbox(root, namespaces=False) as box:
        code, out = run(box, "cat /run/secrets/token; stat -c '%a %u' /run/secrets/token; cat /src/sub/f.txt; "
                             "cat /var/cache/app/old; echo new > /var/cache/app/new; rm /var/cache/app/old; "
                             "echo t > /scratch/t && ls /scratch", mounts)
    assert code == 0, out
    assert out == "hunter2\n400 1234\nfrom the context\nkept from last time\nt\n"
    # The cache keeps what the step left there; the root is as it was: no secret, no stubs.
    assert sorted(os.listdir(cache)) == ["new"] and (cache / "new").read_text() == "new\n"
    assert tree(root) == before
    assert b"hunter2" not in b"".join(d for _, _, d in tree(root).values() if d)


def test_an_empty_directory_of_the_image_is_filled_and_emptied_again(tmp_path: Path) -> None:
    root = make_busybox_root(tmp_path / "root")
    (root / "mnt" / "data").mkdir(parents=True)
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_text("a\n")
    with ChrootSandbox(root, namespaces=False) as box:
        code, out = run(box, "cat /mnt/data/a", [Mount("/mnt/data", source, readonly=True)])
    assert (code, out) == (0, "a\n")
    assert (root / "mnt" / "data").is_dir() and os.listdir(root / "mnt" / "data") == []


def test_a_target_with_content_in_the_image_is_refused(tmp_path: Path) -> None:
    root = make_busybox_root(tmp_path / "root")
    (root / "opt" / "app").mkdir(parents=True)
    (root / "opt" / "app" / "keep").write_text("image content\n")
    before = tree(root)
    with ChrootSandbox(root, namespaces=False) as box:
        with pytest.raises(SandboxError, match="target must be missing or an empty directory"):
            run(box, "true", [Mount("/opt/app", kind="tmpfs")])
    assert tree(root) == before


def test_a_step_replacing_a_cache_dir_with_a_link_does_not_copy_the_root_back(tmp_path: Path) -> None:
    root = make_busybox_root(tmp_path / "root")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "c").write_text("c\n")
    with ChrootSandbox(root, namespaces=False) as box:
        code, out = run(box, "rm -rf /cache && ln -s / /cache", [Mount("/cache", cache)])
    assert code == 0, out
    assert sorted(os.listdir(cache)) == ["c"]
    assert not os.path.lexists(root / "cache")
