"""InPlaceSandbox, exercised only inside a jail.

In-place mode runs RUN in the builder's own ``/``. To test it without ever
touching this machine's root, a forked child first enters a private mount
namespace and chroots into a busybox rootfs in a temp dir; only then does it
construct and use the sandbox. Results come back over a pipe as JSON.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import time
from pathlib import Path

import pytest

from pybuildless.fs.users import ResolvedUser
from pybuildless.sandbox import InPlaceSandbox, Mount, _linux
from tests.test_sandbox import ENV, ROOT_USER, make_busybox_root, processes_with, unique_tag

CAP_SYS_ADMIN = 21

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root"),
]


def _drop_sys_admin() -> None:
    """Lose CAP_SYS_ADMIN for good, as in a container with Docker's default capabilities."""
    _linux.prctl(_linux.PR_CAPBSET_DROP, CAP_SYS_ADMIN)
    header = _linux._CapHeader(_linux._CAP_V3, 0)
    data = (_linux._CapData * 2)()
    assert _linux._capget(ctypes.byref(header), data) == 0
    data[0].effective &= ~(1 << CAP_SYS_ADMIN)
    data[0].permitted &= ~(1 << CAP_SYS_ADMIN)
    assert _linux._capset(ctypes.byref(header), data) == 0


def run_in_jail(jail: Path, scripts: list[str], *, namespaces: bool | None = None,
                user: ResolvedUser = ROOT_USER, container_like: bool = True,
                mounts: tuple[Mount, ...] = (), pivot: bool = False, drop_sys_admin: bool = False,
                before=None, logs: list | None = None, network: str = "default") -> list[list]:
    """``container_like``: make the jail a mount point first, as a container runtime's pivot_root does;
    ``pivot``: enter it with pivot_root (as a runtime does) instead of chroot, so that the jailed
    process may create user namespaces; ``drop_sys_admin``: then lose CAP_SYS_ADMIN, as in an
    unprivileged container; ``before()``: run in the jail before the sandbox, its result is
    formatted into each script as ``{before}``; ``logs``: gets the warnings the sandbox logged."""
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
            if pivot:
                _linux.pivot_into(str(jail))
            else:
                os.chroot(jail)
                os.chdir("/")
            if drop_sys_admin:
                _drop_sys_admin()
            found = before() if before is not None else None
            records: list[str] = []
            handler = logging.Handler(logging.WARNING)
            handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
            logging.getLogger("pybuildless").addHandler(handler)
            box = InPlaceSandbox(namespaces=namespaces)
            results = []
            for script in scripts:
                if found is not None:
                    script = script.format(before=found)
                out = bytearray()
                code = box.run(["/bin/sh", "-c", script], env=ENV, cwd="/", user=user, stdout=out.extend,
                               mounts=mounts, network=network).exit_code
                results.append([code, out.decode()])
            box.close()
            payload = json.dumps(results + [["logs", records]])
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
    *results, (_, records) = results
    if logs is not None:
        logs.extend(records)
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


SECRET = "s3cr3t-registry-token"
# What a hostile step tries, one line each; every line prints exactly one word.
PREFIX_PROBES = [
    "cat /kaniko/.docker/config.json 2>/dev/null || echo unreadable",
    "ls -A /kaniko | grep -c . || true",
    "echo x 2>/dev/null > /kaniko/planted && echo written || echo readonly",
    "umount /kaniko 2>/dev/null && echo unmounted || echo kept",
    "umount -l /kaniko 2>/dev/null && echo unmounted || echo kept",
    # its own user and mount namespace: the tmpfs is copied as a locked mount there
    "unshare -r -m sh -c 'umount /kaniko 2>/dev/null || umount -l /kaniko 2>/dev/null; "
    "cat /kaniko/.docker/config.json' 2>/dev/null || echo unreadable",
    # (the pattern does not match its own command line)
    "grep -rl '" + SECRET.replace("t", "[t]") + "' /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null"
    " | grep -c . || true",
]
PREFIX_EXPECTED = ["unreadable", "0", "readonly", "kept", "kept", "unreadable", "0"]


def _with_prefix(jail: Path) -> None:
    (jail / "kaniko/.docker").mkdir(parents=True)
    (jail / "kaniko/.docker/config.json").write_text('{"auths": {"r.example": {"auth": "%s"}}}' % SECRET)
    (jail / "kaniko/cache/store").mkdir(parents=True)
    (jail / "kaniko/cache/store/cached").write_text("from the cache\n")


def _start_dumpable_neighbour() -> int:
    """A process of the container started before the step (a CI job's shell): dumpable, root,
    with the secret on its command line."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        os.execv("/bin/sh", ["sh", "-c", f"sleep 20; : {SECRET}"])
    return pid


@pytest.mark.parametrize("drop_sys_admin", [False, True], ids=["mount-namespace", "user-namespace"])
def test_prefix_hidden_from_steps(jail: Path, drop_sys_admin: bool) -> None:
    _with_prefix(jail)
    logs: list[str] = []
    results = run_in_jail(jail, PREFIX_PROBES + [
        "cat /proc/{before}/root/kaniko/.docker/config.json 2>/dev/null || echo unreadable",
        "cat /cache/cached",
        "touch /owned && chown 1000:1000 /owned && stat -c %u:%g /owned",
        "id -u",
    ], pivot=True, drop_sys_admin=drop_sys_admin, before=_start_dumpable_neighbour, logs=logs,
        mounts=(Mount("/cache", Path("/kaniko/cache/store")),))
    words = [out.strip() for _, out in results]
    assert words == PREFIX_EXPECTED + ["unreadable", "from the cache", "1000:1000", "0"], results
    assert not (jail / "kaniko/planted").exists()
    # the identity map: the owner the step set is the owner on disk
    st = os.stat(jail / "owned")
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert logs == []


def test_prefix_readable_without_namespaces_warns_once(jail: Path) -> None:
    """No CAP_SYS_ADMIN and no user namespace (a chroot may not create one): the step can read
    the prefix, and the sandbox says so once, naming what to do about secrets."""
    _with_prefix(jail)
    logs: list[str] = []
    results = run_in_jail(jail, ["cat /kaniko/.docker/config.json", "echo second"], drop_sys_admin=True,
                          logs=logs)
    assert results[0] == [0, '{"auths": {"r.example": {"auth": "%s"}}}' % SECRET]
    assert results[1] == [0, "second\n"]
    assert len(logs) == 1, logs
    assert "RUN steps can read /kaniko" in logs[0] and "--mount=type=secret" in logs[0]


def test_user_namespace_way_keeps_users_groups_and_network_none(jail: Path) -> None:
    """Without CAP_SYS_ADMIN: USER with supplementary groups (setgroups stays allowed with a map
    written from outside) and --network=none (a network namespace inside the step's user one)."""
    _with_prefix(jail)
    user = ResolvedUser(1000, 1000, (1000, 2000), "/", "user")
    results = run_in_jail(jail, ["id -u; id -G; grep -c : /proc/net/dev; ls -A /kaniko | grep -c . || true"],
                          user=user, pivot=True, drop_sys_admin=True, network="none")
    assert results == [[0, "1000\n1000 2000\n1\n0\n"]]
