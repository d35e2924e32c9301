"""InPlaceSandbox, exercised only inside a jail.

In-place mode runs RUN in the builder's own ``/``. To test it without ever
touching this machine's root, a forked child first enters a private mount
namespace and chroots into a busybox rootfs in a temp dir; only then does it
construct and use the sandbox. Results come back over a pipe as JSON.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pybuildless.fs.users import ResolvedUser
from pybuildless.sandbox import InPlaceSandbox, Mount, _linux
from tests.test_sandbox import ENV, ROOT_USER, make_busybox_root, processes_with, unique_tag

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root"),
]


def run_in_jail(jail: Path, scripts: list[str], *, namespaces: bool | None = None,
                user: ResolvedUser = ROOT_USER, container_like: bool = True,
                mounts: tuple[Mount, ...] = ()) -> list[list]:
    """``container_like``: make the jail a mount point first, as a container runtime's pivot_root does."""
    (jail / "proc").mkdir(exist_ok=True)
    (jail / "dev").mkdir(exist_ok=True)
    if not (jail / "dev/null").exists():
        (jail / "dev/null").touch()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - jailed child
        try:
            os.close(read_fd)
            _linux.unshare(_linux.CLONE_NEWNS)
            _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
            if container_like:
                _linux.mount(str(jail), str(jail), None, _linux.MS_BIND | _linux.MS_REC)
                # a container has a /proc (of its own pid namespace; here the host's)
                _linux.mount("proc", str(jail / "proc"), "proc", 0)
            _linux.mount("/dev/null", str(jail / "dev/null"), None, _linux.MS_BIND)
            os.chroot(jail)
            os.chdir("/")
            box = InPlaceSandbox(namespaces=namespaces)
            results = []
            for script in scripts:
                out = bytearray()
                code = box.run(["/bin/sh", "-c", script], env=ENV, cwd="/", user=user, stdout=out.extend,
                               mounts=mounts)
                results.append([code, out.decode()])
            box.close()
            payload = json.dumps(results)
        except BaseException as exc:
            payload = json.dumps({"error": repr(exc)})
        os.write(write_fd, payload.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    results = json.loads(data)
    assert not isinstance(results, dict), results
    return results


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    root = make_busybox_root(tmp_path / "jail")
    (root / "jail-marker").write_text("inside\n")
    return root


def test_inplace_runs_in_its_own_root(jail: Path, tmp_path: Path) -> None:
    (tmp_path / "host-marker").write_text("host")
    results = run_in_jail(jail, [
        "cat /jail-marker; test -e /host-marker && echo visible || echo hidden",
        "exit 3",
        "echo made > /created-by-run; id -u",
        "ps -o pid,comm | grep -c .",
    ])
    assert results[0] == [0, "inside\nhidden\n"]
    assert results[1][0] == 3
    assert results[2] == [0, "0\n"]
    assert (jail / "created-by-run").read_text() == "made\n"
    # a pid namespace with the init, the shell, ps and grep (plus the header line)
    assert results[3][0] == 0 and int(results[3][1]) <= 6


@pytest.mark.parametrize("namespaces", [None, False])
def test_inplace_kills_daemons(jail: Path, namespaces: bool | None) -> None:
    tag = unique_tag()
    start = time.monotonic()
    results = run_in_jail(jail, [f"(sleep {tag}1 &); setsid sleep {tag}2 & echo bg"], namespaces=namespaces)
    assert results == [[0, "bg\n"]]
    assert time.monotonic() - start < 10
    assert processes_with(f"sleep {tag}") == []


def test_inplace_runs_as_user(jail: Path) -> None:
    results = run_in_jail(jail, ["id -u; id -g"], user=ResolvedUser(1000, 1000, (), "/home/user", "user"))
    assert results == [[0, "1000\n1000\n"]]


def test_inplace_in_a_bare_chroot_skips_proc(jail: Path) -> None:
    """/ that is not a mount point: no mounts at all (they could propagate), the step still runs."""
    tag = unique_tag()
    results = run_in_jail(jail, [f"ls /proc | grep -c . ; (sleep {tag}1 &); echo ok"], container_like=False)
    assert results == [[0, "0\nok\n"]]
    assert processes_with(f"sleep {tag}") == []


def test_inplace_extra_mounts(jail: Path) -> None:
    (jail / "cache-store").mkdir()
    results = run_in_jail(jail, ["echo kept > /var/cache/app/f; echo t > /scratch/f; ls /scratch"],
                          mounts=(Mount("/var/cache/app", Path("/cache-store")), Mount("/scratch", kind="tmpfs")))
    assert results == [[0, "f\n"]]
    assert (jail / "cache-store/f").read_text() == "kept\n"
    assert not (jail / "scratch").exists() and not (jail / "var/cache").exists()
