"""The RUN step's kernel view: the plan the builder decides (checked in-process against Docker's
and runc's lists), the forked executor of that plan (each action in a throwaway child with a
private mount namespace), and the view a real step gets. Also the capability set's masks.

Independent sources, written out here rather than read from the code under test:
- moby daemon/pkg/oci/defaults.go at b985e2313a8676e18072b442911fc8f64f17d440: the default
  mounts with their options, defaultLinuxMaskedPaths and ReadonlyPaths;
- runc libcontainer/rootfs_linux.go at 76d9cf5da5683ff449ae967db58fa8c5927ca54b: the default
  devices (null zero full random urandom tty), defaultSymlinks and /dev/ptmx -> pts/ptmx,
  maskDir's "nr_blocks=1,nr_inodes=1" retried with nr_inodes=2;
- linux/mount.h for the MS_* values, linux/capability.h for the capability numbers, and
  Docker's documented bounding set of a default container, 00000000a80425fb.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from pybuildless.sandbox import ChrootSandbox, _linux, capabilities, mountplan
from pybuildless.sandbox.mountplan import (MAKE_DIR, MAKE_FILE, MASK, MOUNT, MOUNT_IF_ALLOWED, READ_ONLY, SYMLINK,
                                           SYSFS, MountStep)
from pybuildless.sandbox.mounts import mount_steps, prepare_fallback, prepare_mounts, remove_scratch
from tests.test_sandbox import make_busybox_root, sh

# linux/mount.h
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC = 0x1, 0x2, 0x4, 0x8, 0x1000, 0x4000

# moby defaults.go: defaultLinuxMaskedPaths (before the per-CPU thermal_throttle entries) and ReadonlyPaths
MOBY_MASKED = ["/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
               "/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
               "/sys/devices/virtual/powercap", "/sys/firmware"]
MOBY_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# runc: the devices every container gets (ptmx and console aside) and its symlinks
RUNC_DEVICES = ["null", "zero", "full", "random", "urandom", "tty"]
RUNC_SYMLINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                 "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces and the chroot sandbox need root")


def under(prefix: str, paths: list[str]) -> list[str]:
    return [p[len(prefix) + 1:] for p in paths if p.startswith(prefix + "/")]


# ---- the plan, in-process ----

def test_proc_gets_a_fresh_procfs_then_dockers_masks_and_read_only_paths() -> None:
    steps = mountplan.proc_steps("/r/proc", protect=True)
    assert steps[0] == MountStep(MOUNT, "/r/proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    masked = [s.target for s in steps if s.action == MASK]
    read_only = [s.target for s in steps if s.action == READ_ONLY]
    assert masked == ["/r" + p for p in MOBY_MASKED if p.startswith("/proc/")]
    assert read_only == ["/r" + p for p in MOBY_READONLY]
    assert len(steps) == 1 + len(masked) + len(read_only)
    assert all(s.source is None and s.flags == 0 for s in steps[1:])
    assert mountplan.proc_steps("/r/proc", protect=False) == steps[:1]
    assert mountplan.proc_protection(Path("/x/proc")) == tuple(
        MountStep(s.action, "/x" + s.target[2:]) for s in steps[1:])


def fake_sysfs(tmp_path: Path) -> Path:
    cpus = tmp_path / "sys/devices/system/cpu"
    for name in ("cpu0", "cpu1", "cpu10", "cpufreq", "cpu", "cpuidle"):
        (cpus / name).mkdir(parents=True)
    for name in ("cpu0", "cpu10", "cpufreq", "cpu", "cpuidle"):
        (cpus / name / "thermal_throttle").mkdir()
    (cpus / "cpu1" / "thermal_throttle").write_text("")  # not a directory: not a CPU's throttle dir
    return tmp_path / "sys"


def test_sys_is_a_read_only_sysfs_with_dockers_masks_and_each_cpus_thermal_throttle(tmp_path: Path) -> None:
    steps = mountplan.sys_steps(Path("/r/sys"), host_sys=str(fake_sysfs(tmp_path)))
    assert steps[0] == MountStep(SYSFS, "/r/sys", "sysfs", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # moby: every possible CPU N whose /sys/devices/system/cpu/cpuN/thermal_throttle exists
    assert [s.target for s in steps[1:]] == ["/r" + p for p in MOBY_MASKED if p.startswith("/sys/")] + [
        "/r/sys/devices/system/cpu/cpu0/thermal_throttle", "/r/sys/devices/system/cpu/cpu10/thermal_throttle"]
    assert {s.action for s in steps[1:]} == {MASK}
    assert all(s == MountStep(MASK, s.target) for s in steps[1:])
    assert mountplan.thermal_throttle_dirs(tmp_path / "nothing") == ()
    # without a host_sys the host's own /sys is asked
    assert mountplan.sys_steps("/r/sys") == mountplan.sys_steps("/r/sys", host_sys="/sys")
    assert mountplan.sys_steps("/r/sys")[1:] == tuple(
        MountStep(MASK, f"/r/sys/{p}") for p in ("devices/virtual/powercap", "firmware") + tuple(
            f"devices/system/cpu/{n}/thermal_throttle" for n in sorted(os.listdir("/sys/devices/system/cpu"))
            if n[:3] == "cpu" and n[3:].isdigit() and os.path.isdir(f"/sys/devices/system/cpu/{n}/thermal_throttle")))


def test_dev_is_a_tmpfs_with_runcs_devices_own_devpts_shm_and_symlinks(tmp_path: Path) -> None:
    host_dev = tmp_path / "dev"
    host_dev.mkdir()
    for name in RUNC_DEVICES:
        if name != "full":
            (host_dev / name).write_text("")  # only existence is asked in the plan
    steps = mountplan.dev_steps(Path("/r/dev"), host_dev=str(host_dev))
    # moby /dev: tmpfs nosuid mode=755 size=65536k (noexec added here)
    assert steps[0] == MountStep(MOUNT, "/r/dev", "tmpfs", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")
    devices = [name for name in RUNC_DEVICES if name != "full"]
    expected = []
    for name in devices:
        expected += [MountStep(MAKE_FILE, f"/r/dev/{name}"),
                     MountStep(MOUNT, f"/r/dev/{name}", f"{host_dev}/{name}", None, MS_BIND)]
    expected += [
        MountStep(MAKE_DIR, "/r/dev/pts"),
        # moby /dev/pts: devpts nosuid noexec newinstance ptmxmode=0666 mode=0620 (gid=5 left out)
        MountStep(MOUNT_IF_ALLOWED, "/r/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
                  "newinstance,ptmxmode=0666,mode=0620"),
        MountStep(MAKE_DIR, "/r/dev/shm"),
        # moby /dev/shm: tmpfs nosuid noexec nodev mode=1777, 64 MiB (ShmSize's default)
        MountStep(MOUNT, "/r/dev/shm", "shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k"),
    ]
    expected += [MountStep(SYMLINK, f"/r/dev/{name}", target) for name, target in RUNC_SYMLINKS.items()]
    assert steps[1:] == tuple(expected)
    assert mountplan.dev_steps("/r/dev")[1:3] == (MountStep(MAKE_FILE, "/r/dev/null"),
                                                 MountStep(MOUNT, "/r/dev/null", "/dev/null", None, MS_BIND))


def test_the_plan_of_a_root_mounts_dev_and_sys_before_what_goes_inside_them_and_binds_the_etc_copies(
        tmp_path: Path) -> None:
    root = make_busybox_root(tmp_path / "root")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    plan = prepare_mounts(root, scratch)
    try:
        r = str(root)
        assert plan.steps == (mountplan.dev_steps(root / "dev") + mountplan.sys_steps(root / "sys") + (
            MountStep(MOUNT, f"{r}/etc/hosts", f"{scratch}/hosts", None, MS_BIND),
            MountStep(MOUNT, f"{r}/etc/resolv.conf", f"{scratch}/resolv.conf", None, MS_BIND)))
        # each path is created before it is mounted on, and mounted on after the mount holding it
        for i, step in enumerate(plan.steps):
            holders = [j for j, s in enumerate(plan.steps) if s.action in (MOUNT, SYSFS) and
                       step.target.startswith(s.target + "/")]
            assert all(j < i for j in holders), step
        assert mount_steps({}, scratch) == ()
        assert mount_steps({"hosts": root / "etc/hosts"}, scratch) == (
            MountStep(MOUNT, f"{r}/etc/hosts", f"{scratch}/hosts", None, MS_BIND),)
        assert mount_steps({"sys": root / "sys"}, scratch) == mountplan.sys_steps(root / "sys")
    finally:
        plan.cleanup()


def test_run_capabilities_are_dockers_default_bounding_set_without_mknod() -> None:
    # Docker's documented default CapBnd 00000000a80425fb minus CAP_MKNOD (27)
    assert capabilities.capability_mask(capabilities.RUN_CAPABILITIES) == 0xa80425fb & ~(1 << 27) == 0xa00425fb
    assert capabilities.capset_words(capabilities.RUN_CAPABILITIES) == (0xa00425fb, 0)
    # CAP_SYSLOG (34) and CAP_WAKE_ALARM (35) live in the second 32-bit word of capset
    assert capabilities.capset_words(frozenset({0, 34, 35})) == (1, 0b1100)
    assert capabilities.capability_mask(frozenset()) == 0


def test_the_bounding_drops_are_every_known_capability_not_kept() -> None:
    keep = capabilities.RUN_CAPABILITIES
    drops = capabilities.bounding_drops(keep, 40)
    assert drops == tuple(c for c in range(41) if not 0xa00425fb >> c & 1)
    assert 40 in drops and 27 in drops and 21 in drops
    assert capabilities.bounding_drops(frozenset(), 2) == (0, 1, 2)
    assert capabilities.bounding_drops(frozenset({0, 1, 2}), 2) == ()


# ---- the executor, in a throwaway child with a private mount namespace ----

def mounts_of(text: str) -> dict[str, dict]:
    """mount point -> the top mount there: fstype, root, per-mount and superblock options."""
    found = {}
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        point = fields[4].encode().decode("unicode_escape")
        found[point] = {"root": fields[3], "opts": set(fields[5].split(",")), "fstype": fields[sep + 1],
                        "source": fields[sep + 2], "super": set(fields[sep + 3].split(","))}
    return found


def in_mount_namespace(action) -> dict:
    """Run ``action()`` in a forked child after unshare(CLONE_NEWNS) with / made private; its
    result (or error), and the child's mount table afterwards."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - forked child
        out: dict = {"logs": []}
        try:
            os.close(r)
            handler = logging.Handler(logging.DEBUG)
            handler.emit = lambda record: out["logs"].append(record.getMessage())
            logger = logging.getLogger("pybuildless.sandbox")
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            _linux.unshare(_linux.CLONE_NEWNS)
            _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
            try:
                out["result"] = action()
            except Exception as exc:
                out["error"] = f"{type(exc).__name__}: {exc}"
            with open("/proc/self/mountinfo") as f:
                out["mounts"] = f.read()
            with os.fdopen(w, "w") as f:
                json.dump(out, f)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    out = json.loads(data)
    out["mounts"] = mounts_of(out["mounts"])
    return out


@root_only
def test_masks_cover_a_directory_with_an_empty_read_only_tmpfs_and_a_file_with_the_null_device(
        tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir/secret").write_text("s")
    (tmp_path / "file").write_text("secret")

    def action():
        mountplan.run_steps(tuple(MountStep(MASK, str(tmp_path / n)) for n in ("dir", "file", "absent")))
        st = os.stat(tmp_path / "file")
        try:
            (tmp_path / "dir/new").write_text("x")
            writable = True
        except OSError as exc:
            writable = exc.errno
        return {"listing": os.listdir(tmp_path / "dir"), "content": (tmp_path / "file").read_text(),
                "char": stat.S_ISCHR(st.st_mode), "dev": [os.major(st.st_rdev), os.minor(st.st_rdev)],
                "writable": writable, "absent": os.path.lexists(tmp_path / "absent")}

    out = in_mount_namespace(action)
    assert "error" not in out, out["error"]
    assert out["result"] == {"listing": [], "content": "", "char": True, "dev": [1, 3], "writable": errno.EROFS,
                             "absent": False}
    d = out["mounts"][str(tmp_path / "dir")]
    # runc maskDir: mount("tmpfs", path, "tmpfs", MS_RDONLY, "nr_blocks=1,nr_inodes=1")
    assert d["fstype"] == "tmpfs" and d["source"] == "tmpfs" and "ro" in d["opts"] and "nr_inodes=1" in d["super"]
    assert out["mounts"][str(tmp_path / "file")]["root"] == "/null"
    assert str(tmp_path / "absent") not in out["mounts"]


@root_only
def test_a_kernel_refusing_nr_inodes_1_gets_the_mask_with_nr_inodes_2(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()

    def action():
        real = _linux.mount

        def focal_mount(source, target, fstype, flags=0, data=None):
            # Ubuntu 20.04's tmpfs rejects nr_inodes<2 (runc's comment in maskDir)
            if fstype == "tmpfs" and data and "nr_inodes=1" in data.split(","):
                raise OSError(errno.EINVAL, "nr_inodes")
            real(source, target, fstype, flags, data)

        _linux.mount = focal_mount
        mountplan.run_steps((MountStep(MASK, str(tmp_path / "dir")),))

    out = in_mount_namespace(action)
    assert "error" not in out, out["error"]
    d = out["mounts"][str(tmp_path / "dir")]
    assert d["fstype"] == "tmpfs" and d["source"] == "tmpfs" and "ro" in d["opts"] and "nr_inodes=2" in d["super"]


@root_only
def test_a_file_is_never_masked_with_anything_but_the_null_device(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("secret")

    def action():
        _linux.mount("/dev/zero", "/dev/null", None, _linux.MS_BIND)  # this namespace only
        mountplan.run_steps((MountStep(MASK, str(tmp_path / "file")),))

    out = in_mount_namespace(action)
    assert out.get("error") == "OSError: /dev/null is not the null device; cannot mask kernel files", out
    assert str(tmp_path / "file") not in out["mounts"]


@root_only
def test_read_only_paths_are_bound_read_only_keeping_nosuid_nodev_noexec(tmp_path: Path) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "plain").mkdir()

    def action():
        _linux.mount("tmpfs", str(tmp_path / "locked"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        mountplan.run_steps(tuple(MountStep(READ_ONLY, str(tmp_path / n)) for n in ("locked", "plain", "absent")))
        return os.path.lexists(tmp_path / "absent")

    out = in_mount_namespace(action)
    assert out == {**out, "result": False}, out.get("error")
    locked = out["mounts"][str(tmp_path / "locked")]
    assert {"ro", "nosuid", "nodev", "noexec"} <= locked["opts"] and locked["fstype"] == "tmpfs"
    plain = out["mounts"][str(tmp_path / "plain")]["opts"]
    # the flags of the filesystem tmp_path is on, kept as they were, plus ro
    vfs = os.statvfs(tmp_path).f_flag
    had = {name for name, bit in (("nosuid", os.ST_NOSUID), ("nodev", os.ST_NODEV), ("noexec", os.ST_NOEXEC))
           if vfs & bit}
    assert "ro" in plain and plain & {"nosuid", "nodev", "noexec"} == had


@root_only
@pytest.mark.parametrize("mount_setattr", [True, False])
def test_a_refused_sysfs_is_replaced_by_the_hosts_sys_read_only_all_the_way_down(tmp_path: Path,
                                                                                   mount_setattr: bool) -> None:
    (tmp_path / "fresh").mkdir()
    (tmp_path / "bound").mkdir()
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC

    def action():
        if not mount_setattr:
            _linux.make_tree_readonly = lambda target: False  # as on a kernel before 5.12
        mountplan.run_steps((MountStep(SYSFS, str(tmp_path / "fresh"), "sysfs", "sysfs", flags),
                             # a filesystem type the kernel refuses, as a user namespace refuses sysfs
                             MountStep(SYSFS, str(tmp_path / "bound"), "sysfs", "pbl-no-such-fs", flags)))

    out = in_mount_namespace(action)
    assert "error" not in out, out["error"]
    assert out["logs"] == [f"fresh sysfs refused (mount {tmp_path / 'bound'}: {os.strerror(errno.ENODEV)}); "
                           "binding the host's /sys read-only"]
    fresh = out["mounts"][str(tmp_path / "fresh")]
    assert fresh["fstype"] == "sysfs" and {"ro", "nosuid", "nodev", "noexec"} <= fresh["opts"]
    below = {p: m for p, m in out["mounts"].items() if p == str(tmp_path / "bound")
             or p.startswith(str(tmp_path / "bound") + "/")}
    host = [p for p in mounts_of(Path("/proc/self/mountinfo").read_text()) if p == "/sys" or p.startswith("/sys/")]
    assert sorted(below) == sorted(str(tmp_path / "bound") + p[4:] for p in host)
    assert all("ro" in m["opts"] for m in below.values()), below


@root_only
def test_a_refused_optional_mount_is_passed_over_and_a_refused_mount_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    optional = in_mount_namespace(lambda: mountplan.run_steps(
        (MountStep(MOUNT_IF_ALLOWED, str(tmp_path / "a"), "x", "pbl-no-such-fs"),
         MountStep(MAKE_DIR, str(tmp_path / "a/made")))))
    assert "error" not in optional and os.path.isdir(tmp_path / "a/made")
    assert optional["logs"] == [f"not mounted in the sandbox: [Errno {errno.ENODEV}] mount {tmp_path / 'a'}: "
                                f"{os.strerror(errno.ENODEV)}"]
    required = in_mount_namespace(lambda: mountplan.run_steps(
        (MountStep(MOUNT, str(tmp_path / "a"), "x", "pbl-no-such-fs"),)))
    assert "error" in required and str(tmp_path / "a") not in required["mounts"]


@root_only
def test_files_directories_and_symlinks_are_made_where_the_plan_says(tmp_path: Path) -> None:
    os.umask(old_umask := os.umask(0o022))
    assert old_umask == 0o022, "the modes below assume the usual umask"
    out = in_mount_namespace(lambda: mountplan.run_steps(
        (MountStep(MAKE_FILE, str(tmp_path / "f")), MountStep(MAKE_DIR, str(tmp_path / "d")),
         MountStep(SYMLINK, str(tmp_path / "l"), "pts/ptmx"))))
    assert "error" not in out, out["error"]
    assert (tmp_path / "f").is_file() and (tmp_path / "f").read_bytes() == b""
    # 0666 less the umask, as a device node's mount point gets from runc (createDeviceNode's bind target)
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o644
    assert (tmp_path / "d").is_dir() and os.readlink(tmp_path / "l") == "pts/ptmx"


# ---- what a real step sees ----

@pytest.fixture(scope="module")
def step_view(tmp_path_factory: pytest.TempPathFactory):
    box = ChrootSandbox(make_busybox_root(tmp_path_factory.mktemp("plan") / "rootfs"))
    try:
        code, out = sh(box, "cat /proc/self/mountinfo; echo ==; ls -a /dev; echo ==; "
                            "for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; stat -c %a /dev /dev/shm")
    finally:
        box.close()
    assert code == 0, out
    mountinfo, listing, links = out.split("==\n")
    return mounts_of(mountinfo), sorted(listing.split()), links.split()[:-2], links.split()[-2:]


@root_only
def test_a_step_sees_dockers_dev(step_view) -> None:
    mounts, listing, links, modes = step_view
    assert modes == ["755", "1777"]
    devices = [n for n in RUNC_DEVICES if os.path.exists(f"/dev/{n}")]
    assert listing == sorted([".", ".."] + devices + ["pts", "shm"] + list(RUNC_SYMLINKS))
    assert links == list(RUNC_SYMLINKS.values())
    dev = mounts["/dev"]
    assert dev["fstype"] == "tmpfs" and {"nosuid", "noexec"} <= dev["opts"] and {"mode=755", "size=65536k"} <= dev["super"]
    for name in devices:
        assert mounts[f"/dev/{name}"]["root"].endswith(f"/{name}")
    assert mounts["/dev/pts"]["fstype"] == "devpts" and {"nosuid", "noexec"} <= mounts["/dev/pts"]["opts"]
    assert {"mode=620", "ptmxmode=666"} <= mounts["/dev/pts"]["super"]
    shm = mounts["/dev/shm"]
    assert shm["fstype"] == "tmpfs" and {"nosuid", "nodev", "noexec"} <= shm["opts"] and "size=65536k" in shm["super"]


@root_only
def test_a_step_sees_dockers_proc_and_sys(step_view) -> None:
    mounts = step_view[0]
    assert mounts["/proc"]["fstype"] == "proc" and {"nosuid", "nodev", "noexec"} <= mounts["/proc"]["opts"]
    assert mounts["/sys"]["fstype"] == "sysfs" and {"ro", "nosuid", "nodev", "noexec"} <= mounts["/sys"]["opts"]
    for path in MOBY_MASKED:
        if not os.path.lexists(path):
            continue  # this kernel has no such file; runc skips it too
        if os.path.isdir(path):
            assert mounts[path]["fstype"] == "tmpfs" and "ro" in mounts[path]["opts"], path
        else:
            assert mounts[path]["root"] == "/null", path
    for path in MOBY_READONLY:
        if os.path.lexists(path):
            assert mounts[path]["fstype"] == "proc" and "ro" in mounts[path]["opts"], path
    for name in ("/etc/hosts", "/etc/resolv.conf"):
        assert name in mounts


# ---- without a mount namespace: plain files, made and removed by the builder ----

@root_only
def test_the_fallback_makes_runcs_device_nodes_and_the_etc_copies_and_removes_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "dev/null").write_text("the image's own")
    (root / "etc/hosts").write_text("10.0.0.1 image\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    plan = prepare_fallback(root, scratch)
    try:
        assert (root / "dev/null").read_text() == "the image's own" and (root / "etc/hosts").read_text() == "10.0.0.1 image\n"
        made = [n for n in RUNC_DEVICES if n != "null" and os.path.exists(f"/dev/{n}")]
        assert plan.created == [root / "dev" / n for n in made] + [root / "etc/resolv.conf"]
        for name in made:
            st = os.lstat(root / "dev" / name)
            assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat(f"/dev/{name}").st_rdev, name
            assert stat.S_IMODE(st.st_mode) == 0o666, name
        assert (root / "etc/resolv.conf").read_bytes() == Path("/etc/resolv.conf").read_bytes()[:1 << 20]
    finally:
        plan.cleanup()
    assert sorted(os.listdir(root / "dev")) == ["null"] and sorted(os.listdir(root / "etc")) == ["hosts"]


@root_only
def test_the_fallback_adds_no_etc_and_passes_over_an_etc_file_of_the_wrong_kind(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "dev").mkdir()
    plan = prepare_fallback(bare, tmp_path)
    try:
        assert not (bare / "etc").exists()
    finally:
        plan.cleanup()
    odd = tmp_path / "odd"
    (odd / "etc/hosts").mkdir(parents=True)  # a directory where the file would go
    plan = prepare_fallback(odd, tmp_path)
    try:
        assert (odd / "etc/resolv.conf").is_file() and (odd / "etc/hosts").is_dir()
    finally:
        plan.cleanup()


@root_only
def test_the_fallback_without_host_files_writes_the_default_hosts_and_warns_per_missing_device(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)

    def action():
        # a host without /etc/hosts, /etc/resolv.conf and device nodes (this namespace only)
        _linux.mount("tmpfs", "/etc", "tmpfs", 0)
        _linux.mount("tmpfs", "/dev", "tmpfs", 0)
        plan = prepare_fallback(root, tmp_path)
        try:
            seen = {"hosts": (root / "etc/hosts").read_text(), "resolv": (root / "etc/resolv.conf").read_text(),
                    "dev": sorted(os.listdir(root / "dev"))}
        finally:
            plan.cleanup()
        (tmp_path / "copies").mkdir()
        plan = prepare_mounts(root, tmp_path / "copies")
        try:
            # what the namespaced step gets bound over its /etc files
            return {**seen, "copies": {n: (tmp_path / "copies" / n).read_text() for n in ("hosts", "resolv.conf")}}
        finally:
            plan.cleanup()

    out = in_mount_namespace(action)
    assert "error" not in out, out["error"]
    # the loopback entries of Docker's default /etc/hosts (moby daemon/libnetwork/etchosts/etchosts.go, b985e2313a86)
    default_hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    assert out["result"] == {"hosts": default_hosts, "resolv": "", "dev": [],
                             "copies": {"hosts": default_hosts, "resolv.conf": ""}}
    assert [m for m in out["logs"] if m.startswith("cannot create")] == [
        f"cannot create /dev/{n} in the RUN root: No such file or directory" for n in RUNC_DEVICES]


def test_removing_a_scratch_dir_that_is_gone_is_no_error(tmp_path: Path) -> None:
    remove_scratch(tmp_path / "gone")
    (tmp_path / "s/sub").mkdir(parents=True)
    remove_scratch(tmp_path / "s")
    assert not (tmp_path / "s").exists()


@root_only
def test_without_a_host_sys_the_hosts_own_cpus_are_asked(tmp_path: Path) -> None:
    def action():
        # CPUs with throttle dirs, in this namespace only (many machines have none to ask)
        _linux.mount("tmpfs", "/sys/devices/system/cpu", "tmpfs", 0)
        for name in ("cpu0", "cpu3"):
            os.makedirs(f"/sys/devices/system/cpu/{name}/thermal_throttle")
        return [s.target for s in mountplan.sys_steps("/r/sys")]

    out = in_mount_namespace(action)
    assert "error" not in out, out["error"]
    assert out["result"][-2:] == ["/r/sys/devices/system/cpu/cpu0/thermal_throttle",
                                  "/r/sys/devices/system/cpu/cpu3/thermal_throttle"]
