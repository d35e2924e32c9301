"""Rootless builds: the user-namespace re-execution and end-to-end builds as an unprivileged user.

The end-to-end cases create a throwaway user (uid/gid from a free range) with
/etc/subuid and /etc/subgid ranges, and a second one without; both, the
ranges included, are removed afterwards. The builder runs as that user via
``setpriv`` in a private mount namespace whose only change is that /root (where
this interpreter lives, mode 0700) shows just the interpreter tree, so the
user can start Python at the same path.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuildless.errors import SandboxError
from pybuildless.sandbox import userns
from pybuildless.sandbox.userns import IdMap, UsernsPlan, plan_for, subordinate_ranges, userns_blockers
from tests.buildkit import ROOT, executor, unpack, write_context

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creating the test users needs root")

# Runs the CLI the way the build command does once the integration calls maybe_reexec first.
WRAPPER = """\
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from pybuildless.sandbox.userns import maybe_reexec
from pybuildless.cli import run_guarded
from pybuildless.cli.build import command
args = sys.argv[1:]
isolation = args[args.index("--isolation") + 1] if "--isolation" in args else "auto"
run_guarded(command, ["--isolation", maybe_reexec(isolation)] + [a for i, a in enumerate(args)
            if a != "--isolation" and (i == 0 or args[i - 1] != "--isolation")], "executor")
"""


# --- units -------------------------------------------------------------------------------------


def test_subordinate_ranges_match_name_or_uid(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\n# comment\nbob:200000:10\n1234:300000:5\nalice:400000:0\nbad:x:1\n"
                 "alice:500000:7\n")
    assert subordinate_ranges(f, "alice", 1000) == [(100000, 65536), (500000, 7)]
    assert subordinate_ranges(f, "carol", 1234) == [(300000, 5)]
    assert subordinate_ranges(f, None, 999) == []
    assert subordinate_ranges(tmp_path / "missing", "alice", 1) == []


def test_plan_full_single_and_identity(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(f"nobody:100000:65536\n{nobody.pw_uid}:300000:10\n")
    subgid.write_text("nobody:200000:65536\n")
    plan = plan_for(nobody.pw_uid, nobody.pw_gid, subuid=subuid, subgid=subgid)
    if shutil.which("newuidmap") and shutil.which("newgidmap"):
        assert plan.kind == "full" and plan.use_helpers
        assert plan.uid_maps == (IdMap(0, nobody.pw_uid, 1), IdMap(1, 100000, 65536), IdMap(65537, 300000, 10))
        assert plan.gid_maps == (IdMap(0, nobody.pw_gid, 1), IdMap(1, 200000, 65536))
    subgid.write_text("")
    single = plan_for(nobody.pw_uid, nobody.pw_gid, subuid=subuid, subgid=subgid)
    assert single == UsernsPlan("single", (IdMap(0, nobody.pw_uid, 1),), (IdMap(0, nobody.pw_gid, 1),), False)
    identity = plan_for(0, 0, subuid=subuid, subgid=subgid)
    assert identity.kind == "identity" and identity.uid_maps == (IdMap(0, 0, 4294967295),)


def test_blockers_name_the_sysctls(tmp_path: Path) -> None:
    for name, value in (("kernel/unprivileged_userns_clone", "0"), ("user/max_user_namespaces", "0"),
                        ("kernel/apparmor_restrict_unprivileged_userns", "1")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(value + "\n")
    reasons = userns_blockers(tmp_path)
    assert len(reasons) == 3
    assert "unprivileged_userns_clone is 0" in reasons[0]
    assert "max_user_namespaces is 0" in reasons[1]
    assert "AppArmor" in reasons[2] and "apparmor_restrict_unprivileged_userns=1" in reasons[2]
    (tmp_path / "user/max_user_namespaces").write_text("15000\n")
    (tmp_path / "kernel/unprivileged_userns_clone").write_text("1\n")
    (tmp_path / "kernel/apparmor_restrict_unprivileged_userns").write_text("0\n")
    assert userns_blockers(tmp_path, probe=False) == []


def test_other_isolations_pass_through() -> None:
    assert userns.maybe_reexec("inplace") == "inplace"
    assert userns.maybe_reexec("chroot") == "chroot"
    if os.geteuid() == 0:
        assert userns.maybe_reexec("auto") == "chroot"


@needs_root
def test_run_in_namespace_identity_map_passes_exit_code() -> None:
    plan = plan_for(0, 0)
    script = f'test "$(cat /proc/self/uid_map | tr -s " ")" = " 0 0 4294967295" && ' \
             f'test "${userns.ENV_MARKER}" = identity && exit 7'
    assert userns.run_in_namespace(plan, ["sh", "-c", script]) == 7
    assert userns.run_in_namespace(plan, ["sh", "-c", "kill -TERM $$"]) == 128 + 15


@needs_root
def test_run_in_namespace_reports_exec_failure() -> None:
    with pytest.raises(SandboxError, match="no-such-program"):
        userns.run_in_namespace(plan_for(0, 0), ["/no-such-program"])


# --- running as an unprivileged user -----------------------------------------------------------


@dataclass(frozen=True)
class BuildUser:
    name: str
    uid: int
    gid: int
    workspace: Path  # owned by the user

    def env(self) -> dict[str, str]:
        home = self.workspace / "home"
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "USER": self.name,
                "LOGNAME": self.name, "XDG_CACHE_HOME": str(home / ".cache"), "TMPDIR": str(self.workspace / "tmp"),
                "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8"}

    def run(self, argv: list[str], *, env: dict[str, str] | None = None,
            timeout: float = 300, as_root_first: str = "") -> subprocess.CompletedProcess:
        """``argv`` as this user, without any capability, in a view where the interpreter is reachable.

        ``as_root_first``: shell commands run as root in that private mount namespace before."""
        view = self.workspace / "root-view"
        script = ('mount --rbind "$1" "$2/.pyenv-view" && '
                  'mount --rbind "$2" /root && shift 2 && exec "$@"')
        interp_home = Path(sys.executable).resolve().parents[3] if _under_root_home() else None
        prefix = ["unshare", "--mount", "--propagation", "private", "--"]
        if as_root_first:
            script = as_root_first + " && " + script
        setpriv = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--inh-caps=-all"]
        if interp_home is None:
            full = prefix + (["sh", "-c", as_root_first + ' && exec "$@"', "sh"] if as_root_first else []) \
                + setpriv + argv
        else:
            full = prefix + ["sh", "-c", script.replace(".pyenv-view", interp_home.name), "sh", str(interp_home),
                             str(view)] + setpriv + argv
        return subprocess.run(full, env=env or self.env(), capture_output=True, timeout=timeout)

    def executor(self, *args: str, as_root_first: str = "") -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-c", WRAPPER, *args], as_root_first=as_root_first)


def _under_root_home() -> bool:
    return str(Path(sys.executable).resolve()).startswith("/root/")


def _free_id(start: int) -> int:
    used = {p.pw_uid for p in pwd.getpwall()} | {int(line.split(":")[2]) for line in
                                                 Path("/etc/group").read_text().splitlines() if line.count(":") >= 3}
    for candidate in range(start, start + 5000):
        if candidate not in used and candidate + 1 not in used:
            return candidate
    raise RuntimeError("no free uid")


def _make_user(name: str, uid: int, base: Path) -> BuildUser:
    subprocess.run(["groupadd", "-g", str(uid), name], check=True, capture_output=True)
    # No automatic subordinate ranges (useradd adds them when login.defs says so): the test sets its own.
    subprocess.run(["useradd", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", "-u", str(uid), "-g", str(uid), "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    workspace = base / name
    for sub in ("", "home", "tmp", "root-view"):
        (workspace / sub).mkdir(exist_ok=True)
    if _under_root_home():
        (workspace / "root-view" / Path(sys.executable).resolve().parents[3].name).mkdir()
    for path in (workspace, workspace / "home", workspace / "tmp"):
        os.chown(path, uid, uid)
    os.chmod(workspace / "root-view", 0o755)
    return BuildUser(name, uid, uid, workspace)


def _remove_user(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)


def _edit_subid(path: Path, add: str | None = None, remove: str | None = None) -> None:
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    if remove is not None:
        lines = [line for line in lines if line.rstrip("\n") != remove]
    if add is not None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(add + "\n")
    path.write_text("".join(lines))


@pytest.fixture(scope="module")
def users():
    """(a user with subordinate ranges, a user without); both and the ranges removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating the test users needs root")
    for tool in ("useradd", "setpriv", "unshare", "newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (packages passwd, util-linux, uidmap)")
    uid = _free_id(23000)
    base = Path(tempfile.mkdtemp(prefix="pybuildless-userns-"))
    os.chmod(base, 0o755)
    full_name, single_name = f"pbl-full-{uid}", f"pbl-single-{uid + 1}"
    entry = f"{full_name}:{_free_subid_start()}:65536"
    created: list[str] = []
    try:
        full = _make_user(full_name, uid, base)
        created.append(full_name)
        single = _make_user(single_name, uid + 1, base)
        created.append(single_name)
        _edit_subid(userns.SUBUID_FILE, add=entry)
        _edit_subid(userns.SUBGID_FILE, add=entry)
        probe = full.run(["unshare", "--user", "--map-root-user", "true"])
        if probe.returncode != 0:
            pytest.skip("the kernel forbids unprivileged user namespaces here: "
                        + "; ".join(userns_blockers()) + f" ({probe.stderr.decode(errors='replace').strip()})")
        yield full, single
    finally:
        _edit_subid(userns.SUBUID_FILE, remove=entry)
        _edit_subid(userns.SUBGID_FILE, remove=entry)
        for name in created:
            _remove_user(name)
        shutil.rmtree(base, ignore_errors=True)


def _free_subid_start() -> int:
    end = 100000
    for path in (userns.SUBUID_FILE, userns.SUBGID_FILE):
        for line in (path.read_text().splitlines() if path.exists() else []):
            fields = line.split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                end = max(end, int(fields[1]) + int(fields[2]))
    return ((end + 65535) // 65536 + 1) * 65536


def _context(user: BuildUser, name: str, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = write_context(user.workspace / "ctx" / name, {"Dockerfile": dockerfile, **(files or {})})
    for dirpath, dirnames, filenames in os.walk(user.workspace / "ctx"):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(Path(dirpath) / f, 0o644)
    return ctx


def _build_both(tmp_path: Path, user: BuildUser, registry, name: str, dockerfile: str,
                files: dict[str, str] | None = None, isolation: str = "userns"):
    """Build the same context as root (chroot) and as ``user``; return both unpacked images."""
    ctx = _context(user, name, dockerfile, files)
    root_ref, user_ref = registry.ref(f"userns/{name}:root"), registry.ref(f"userns/{name}:rootless")
    common = ["--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile")]
    executor(*common, "--destination", root_ref, "--isolation", "chroot", cwd=tmp_path)
    proc = user.executor(*common, "--destination", user_ref, "--isolation", isolation)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return unpack(f"docker://{root_ref}", tmp_path / "root"), unpack(f"docker://{user_ref}", tmp_path / "user"), proc


E2E_DOCKERFILE = """\
FROM {base} AS builder
WORKDIR /opt/app
COPY src/ ./src/
RUN echo built > out && cat src/part.txt >> out && ln -s out link && ln out hard && chmod 0640 out

FROM {base}
COPY --from=builder /opt/app /opt/app
COPY --chown=user:user --chmod=0750 run.sh /srv/run.sh
RUN mkdir -p /data/sub && echo x > /data/sub/f && chown -R user:user /data && rm -rf /home/user \
 && mkdir /home/user && chown 1000:1000 /home/user
USER user
RUN echo "$(id -u):$(id -g)" > /tmp/who && mkdir /tmp/mine
USER root
RUN rm /bin/vi && mkdir -p /var/cache/x && touch /var/cache/x/y
RUN --network=none --mount=type=cache,target=/cache --mount=type=tmpfs,target=/scratch \
    set -e; test -c /dev/null; test -r /proc/self/status; test -d /sys/kernel; echo data > /dev/null; \
    echo cached >> /cache/log; echo t > /scratch/t; test "$(grep -c : /proc/net/dev)" = 1
"""


@pytest.mark.slow
def test_rootless_build_matches_root_build(tmp_path, users, registry, busybox_image) -> None:
    full, _ = users
    root_image, user_image, proc = _build_both(
        tmp_path, full, registry, "main", E2E_DOCKERFILE.format(base=busybox_image),
        {"src/part.txt": "context\n", "run.sh": "#!/bin/sh\necho hi\n"})
    log = proc.stderr.decode(errors="replace")
    assert "full id map" in log and "isolation: userns" in log
    root_tree, user_tree = root_image.tree(), user_image.tree()
    assert user_tree == root_tree
    assert user_tree["/tmp/mine"][2:4] == (1000, 1000) and user_tree["/data/sub/f"][2:4] == (1000, 1000)
    assert user_tree["/srv/run.sh"][1:4] == (0o750, 1000, 1000)
    assert (user_image.rootfs / "tmp/who").read_text() == "1000:1000\n"
    assert "/bin/vi" not in user_tree and user_tree["/opt/app/link"][4] == "out"
    assert user_image.config["config"]["User"] == root_image.config["config"]["User"] == "root"


@pytest.mark.slow
def test_root_with_userns_isolation_uses_an_identity_map(tmp_path, registry, busybox_image) -> None:
    """Real root asking for userns: same image as chroot, built inside a user namespace."""
    if os.geteuid() != 0:
        pytest.skip("this case is about running as root")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\n"
                        "RUN cat /proc/self/uid_map > /uidmap && mkdir /o && chown 1000:1000 /o\n"})
    ref = registry.ref("userns/root-identity:1")
    proc = subprocess.run([sys.executable, "-c", WRAPPER, "--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"),
                           "--destination", ref, "--isolation", "userns"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=300)
    log = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, log
    assert "identity id map" in log
    image = unpack(f"docker://{ref}", tmp_path / "u")
    assert (image.rootfs / "uidmap").read_text().split() == ["0", "0", "4294967295"]
    assert image.tree()["/o"][2:4] == (1000, 1000)


@pytest.mark.slow
def test_rootless_useradd_and_chown(tmp_path, users, registry, busybox_image) -> None:
    full, _ = users
    dockerfile = f"""\
FROM {busybox_image}
RUN echo 'app:x:2000:2001:app:/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:2001:' >> /etc/group \
 && mkdir -p /home/app /data && echo d > /data/f && chown -R app:app /home/app /data \
 && chown 3000:4000 /data/f && chmod 4755 /data/f && chown 65534:65534 /data
USER app
RUN id -u > /home/app/id && id -g >> /home/app/id && touch /home/app/made-by-app
"""
    root_image, image, _ = _build_both(tmp_path, full, registry, "useradd", dockerfile)
    tree = image.tree()
    assert tree["/home/app"][2:4] == (2000, 2001)
    assert tree["/home/app/made-by-app"][2:4] == (2000, 2001)
    assert tree["/data/f"][1:4] == (0o4755, 3000, 4000)
    assert tree["/data"][2:4] == (65534, 65534)
    assert (image.rootfs / "home/app/id").read_text() == "2000\n2001\n"
    assert tree == root_image.tree()


@pytest.mark.slow
def test_failing_run_exit_code_passes_through(users, registry, busybox_image) -> None:
    full, _ = users
    ctx = _context(full, "fails", f"FROM {busybox_image}\nRUN echo before && exit 3\n")
    proc = full.executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--no-push",
                         "--isolation", "userns")
    root = executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--no-push",
                    "--isolation", "chroot", check=False)
    assert root.returncode != 0
    assert proc.returncode == root.returncode, proc.stderr.decode(errors="replace")


@pytest.mark.slow
def test_single_mapping_with_auto(tmp_path, users, registry, busybox_image) -> None:
    """No subordinate ranges: root-owned images build, other owners are refused with a clear error."""
    full, single = users
    # A base whose files are all root's: only uid 0 exists in a single mapping.
    ctx = _context(full, "rootonly",
                   f"FROM {busybox_image} AS b\nFROM scratch\nCOPY --from=b /bin/busybox /bin/busybox\n")
    base = registry.ref("userns/rootonly:1")
    executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", base,
             "--isolation", "chroot", cwd=tmp_path)
    ctx2 = _context(single, "single", f'FROM {base}\nRUN ["/bin/busybox", "sh", "-c", '
                                      '"/bin/busybox mkdir /made && /bin/busybox echo ok > /made/f"]\n')
    ref = registry.ref("userns/single:1")
    proc = single.executor("--context", str(ctx2), "--dockerfile", str(ctx2 / "Dockerfile"), "--destination", ref)
    log = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, log
    assert "single id mapping" in log and "isolation: userns (--isolation=auto" in log, log
    image = unpack(f"docker://{ref}", tmp_path / "u")
    assert (image.rootfs / "made/f").read_text() == "ok\n"
    assert image.tree()["/made/f"][2:4] == (0, 0)
    ctx3 = _context(single, "single-chown", f'FROM {base}\nRUN ["/bin/busybox", "chown", "1000", "/bin"]\n')
    proc = single.executor("--context", str(ctx3), "--dockerfile", str(ctx3 / "Dockerfile"), "--no-push")
    assert proc.returncode != 0
    assert b"Invalid argument" in proc.stdout + proc.stderr
    ctx4 = _context(single, "single-user", f'FROM {base}\nUSER 1000\nRUN ["/bin/busybox", "true"]\n')
    proc = single.executor("--context", str(ctx4), "--dockerfile", str(ctx4 / "Dockerfile"), "--no-push")
    assert proc.returncode != 0
    assert b"uid 1000 is not mapped in this user namespace" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_blocked_namespaces_give_a_clear_error(users) -> None:
    """user.max_user_namespaces=0 in an enclosing namespace: userns fails naming the sysctl, auto too."""
    full, _ = users
    ctx = _context(full, "blocked", "FROM scratch\n")
    for isolation in ("userns", "auto"):
        script = ('echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --reuid=1 --regid=1 --clear-groups '
                  '"$@"')
        # Inside a namespace owned by the test user where it is uid 0, then drop to uid 1 (also mapped).
        proc = full.run(["unshare", "--user", "--map-users=auto", "--map-groups=auto", "--map-root-user",
                         "sh", "-c", script, "sh", sys.executable, "-c", WRAPPER, "--context", str(ctx),
                         "--no-push", "--isolation", isolation])
        err = proc.stderr.decode(errors="replace")
        assert proc.returncode != 0
        assert "max_user_namespaces is 0" in err, err


@needs_root
def test_termination_is_forwarded_once() -> None:
    """SIGTERM sent to the waiting parent reaches the builder in the namespace, once."""
    code = ("import sys; from pybuildless.sandbox import userns; "
            "sys.exit(userns.run_in_namespace(userns.plan_for(0, 0), sys.argv[1:]))")
    child = ('n=0; trap \'n=$((n+1))\' TERM; echo ready; i=0; '
             'while [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); [ $n -gt 0 ] && break; done; sleep 0.3; exit $((40+n))')
    proc = subprocess.Popen([sys.executable, "-c", code, "sh", "-c", child], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(15)
    assert proc.wait(timeout=30) == 41


@pytest.mark.slow
def test_single_mapping_records_owners_in_xattrs(tmp_path, users, registry, busybox_image) -> None:
    """Owners a single map cannot apply survive extraction, RUN and COPY --from through the xattr."""
    _, single = users
    dockerfile = (f"FROM {busybox_image} AS base\nFROM base\nRUN echo x >> /home/user/.profile && mkdir /made\n"
                  "COPY --from=base /home /copied\nCOPY --chown=1000:1000 f /chowned\n")
    ctx = _context(single, "xattr", dockerfile, {"f": "f\n"})
    ref = registry.ref("userns/xattr:1")
    proc = single.executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", ref,
                           "--isolation", "userns")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    image = unpack(f"docker://{ref}", tmp_path / "u")
    tree = image.tree()
    assert "user.pybuildless.owner" not in os.listxattr(image.rootfs / "copied" / "user")
    assert tree["/home/user"][2:4] == (1000, 1000)
    assert tree["/home/user/.profile"][2:4] == (0, 0)
    # A directory source's contents are copied; the destination it creates is 0:0 (BuildKit's
    # rule, fsutil copy.go prepareTargetDir), the entries inside keep their recorded owners.
    assert tree["/copied"][2:4] == (0, 0) and tree["/copied/user"][2:4] == (1000, 1000)
    assert tree["/chowned"][2:4] == (1000, 1000)
    assert tree["/made"][2:4] == (0, 0)


# A container's /proc as Docker and Kubernetes leave it: masked files (a bind of /dev/null) and
# directories (an empty read-only tmpfs), so the kernel refuses the user namespace a fresh procfs.
MASK_PROC_LIKE_A_CONTAINER = ("mount --bind /dev/null /proc/timer_list && mount --bind /dev/null /proc/keys && "
                              "mount -t tmpfs -o ro tmpfs /proc/acpi")

MASKED_PROC_DOCKERFILE = """\
FROM {base} AS build
RUN echo built > /out && test -r /proc/self/status && test -c /dev/null && ls / > /rootdir
RUN (echo x > /proc/sys/kernel/core_pattern) 2>/dev/null && echo writable > /proc-writes || echo refused > /proc-writes
RUN (mount -t proc proc /mnt) 2>/dev/null && echo mounted > /proc-mount || echo refused > /proc-mount
RUN (sleep 1000 &) ; echo started
# the builder's flags and environment, as seen through the container's /proc (the patterns skip themselves)
RUN grep -l -e 'cmdline-s3cre[t]' -e 'PYTHONPAT[H]=' /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null \
    | wc -l > /leaks; ls /proc | grep -c '^[0-9]' > /processes
FROM {base}
COPY --from=build /out /rootdir /proc-writes /proc-mount /leaks /processes /
RUN cat /proc/timer_list /proc/keys | wc -c > /kcore-bytes
"""


@pytest.mark.slow
def test_masked_proc_falls_back_to_the_containers_proc(tmp_path, users, registry, busybox_image) -> None:
    """Rootless in a container-like /proc: every RUN still works, with the container's /proc read-only
    (masks kept) and no pid namespace, and one warning says what the steps can see."""
    full, _ = users
    ctx = _context(full, "masked-proc", MASKED_PROC_DOCKERFILE.format(base=busybox_image))
    ref = registry.ref("userns/masked-proc:1")
    started = time.monotonic()
    proc = full.executor("--context", str(ctx), "--dockerfile", str(ctx / "Dockerfile"), "--destination", ref,
                         "--isolation", "userns", "--build-arg", "UNUSED=cmdline-s3cret",
                         as_root_first=MASK_PROC_LIKE_A_CONTAINER)
    log = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, log
    assert time.monotonic() - started < 120  # the background sleep did not hold the build
    assert log.count("RUN steps get this container's /proc read-only") == 1, log
    image = unpack(f"docker://{ref}", tmp_path / "img")
    files = {name: (image.rootfs / name).read_text()
             for name in ("out", "proc-writes", "proc-mount", "kcore-bytes", "leaks")}
    assert files == {"out": "built\n", "proc-writes": "refused\n", "proc-mount": "refused\n", "kcore-bytes": "0\n",
                     "leaks": "0\n"}
    # no pid namespace: the step saw the machine's processes (this test's /proc is the host's)
    assert int((image.rootfs / "processes").read_text()) > 10
    # the step saw the stage root (the monitor pivoted into it), not the machine's /
    seen = set((image.rootfs / "rootdir").read_text().split())
    assert "out" in seen and "work" not in seen and "tmp" in seen
    assert seen <= {p.name for p in image.rootfs.iterdir()} | {"dev", "proc", "sys"}, seen
