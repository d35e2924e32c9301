"""Docker's default seccomp profile, as data, and its evaluation for one RUN step.

Transcribed from moby/moby at b985e2313a86, files
vendor/github.com/moby/profiles/seccomp/default.json and default_linux.go
(the Go twin the JSON is generated from); the conditions are evaluated the way
seccomp_linux.go (setupSeccomp) does: ``includes``/``excludes`` on
capabilities are checked against the bounding set the step keeps, ``arches``
against the host's native architecture (libseccomp names: amd64, arm64),
``minKernel`` against the running kernel. The rules that survive then apply
to every syscall ABI the filter covers, by name.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass

ALLOW = "allow"

# linux/capability.h numbers of the capabilities the profile conditions on.
CAPABILITY_NUMBERS = {
    "CAP_DAC_READ_SEARCH": 2, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_SYSLOG": 34, "CAP_PERFMON": 38, "CAP_BPF": 39,
}

# os.uname().machine -> the profile's (libseccomp's) name for the native arch.
NATIVE_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class ArgCheck:
    """One argument comparison; ``op`` is "eq", "lt", "gt" or "masked_eq" (``arg & mask == value``)."""
    index: int
    op: str
    value: int
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True)
class Rule:
    """One rule of the default seccomp profile and the conditions it applies under."""

    names: tuple[str, ...]
    action: str | int = ALLOW  # ALLOW, or an errno to return
    args: tuple[ArgCheck, ...] = ()
    caps: tuple[str, ...] = ()  # included only if the step keeps all of these
    arches: tuple[str, ...] = ()  # included only on these native arches
    min_kernel: tuple[int, int] | None = None
    without_caps: tuple[str, ...] = ()  # excluded if the step keeps any of these
    without_arches: tuple[str, ...] = ()


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# The unconditional allow list (first entry of the profile), alphabetical.
_ALWAYS_ALLOWED = _names("""
    _llseek _newselect accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod
    chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
    clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat
    dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
    epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
    fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl
    fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64
    fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv
    futex_wake futimesat get_robust_list get_thread_area getcpu getcwd getdents getdents64 getegid
    getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
    getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit getrusage
    getsid getsockname getsockopt gettid gettimeofday getuid getuid32 getxattr getxattrat
    inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy io_getevents
    io_pgetevents io_pgetevents_time64 io_setup io_submit ioctl ioprio_get ioprio_set ipc kill
    landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
    listen listmount listxattr listxattrat llistxattr lremovexattr lseek lsetxattr lstat lstat64 madvise
    map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
    mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
    mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock
    munlockall munmap name_to_handle_at nanosleep newfstatat open openat openat2 pause pidfd_open
    pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64
    preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read
    readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
    removexattr removexattrat rename renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq
    rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
    rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min
    sched_getaffinity sched_getattr sched_getparam sched_getscheduler sched_rr_get_interval
    sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam sched_setscheduler
    sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64
    sendmmsg sendmsg sendto set_robust_list set_thread_area set_tid_address setfsgid setfsgid32 setfsuid
    setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32
    setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid setsockopt setuid
    setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
    sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statmount statx symlink
    symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete
    timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
    timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64
    ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice
    wait4 waitid waitpid write writev
""")

# CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNET|CLONE_NEWCGROUP
CLONE_NAMESPACE_FLAGS = 0x7E020000
AF_ALG, AF_VSOCK = 38, 40

DOCKER_DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(_ALWAYS_ALLOWED),
    Rule(_names("process_vm_readv process_vm_writev ptrace"), min_kernel=(4, 8)),
    # socket(2) for every address family but AF_ALG and AF_VSOCK.
    Rule(("socket",), args=(ArgCheck(0, "lt", AF_ALG),)),
    Rule(("socket",), args=(ArgCheck(0, "eq", AF_ALG + 1),)),
    Rule(("socket",), args=(ArgCheck(0, "gt", AF_VSOCK),)),
    # personality(2): PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query 0xffffffff.
    *(Rule(("personality",), args=(ArgCheck(0, "eq", persona),))
      for persona in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)),
    Rule(_names("sync_file_range2 swapcontext"), arches=("ppc64le",)),
    Rule(_names("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls"),
         arches=("arm", "arm64")),
    Rule(("arch_prctl",), arches=("amd64", "x32")),
    Rule(("modify_ldt",), arches=("amd64", "x32", "x86")),
    Rule(_names("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr"), arches=("s390", "s390x")),
    Rule(("riscv_flush_icache",), arches=("riscv64",)),
    Rule(("open_by_handle_at",), caps=("CAP_DAC_READ_SEARCH",)),
    Rule(_names("""bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
                   lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount
                   open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog
                   umount umount2 unshare"""), caps=("CAP_SYS_ADMIN",)),
    # clone(2) without namespace flags; s390 passes the flags second.
    Rule(("clone",), args=(ArgCheck(0, "masked_eq", 0, mask=CLONE_NAMESPACE_FLAGS),),
         without_caps=("CAP_SYS_ADMIN",), without_arches=("s390", "s390x")),
    Rule(("clone",), args=(ArgCheck(1, "masked_eq", 0, mask=CLONE_NAMESPACE_FLAGS),),
         arches=("s390", "s390x"), without_caps=("CAP_SYS_ADMIN",)),
    # clone3's flags sit in memory a filter cannot read: ENOSYS makes libc fall back to clone.
    Rule(("clone3",), action=errno.ENOSYS, without_caps=("CAP_SYS_ADMIN",)),
    Rule(("reboot",), caps=("CAP_SYS_BOOT",)),
    Rule(("chroot",), caps=("CAP_SYS_CHROOT",)),
    Rule(_names("delete_module init_module finit_module"), caps=("CAP_SYS_MODULE",)),
    Rule(("acct",), caps=("CAP_SYS_PACCT",)),
    Rule(_names("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace"),
         caps=("CAP_SYS_PTRACE",)),
    Rule(_names("iopl ioperm"), caps=("CAP_SYS_RAWIO",)),
    Rule(_names("settimeofday stime clock_settime clock_settime64"), caps=("CAP_SYS_TIME",)),
    Rule(("vhangup",), caps=("CAP_SYS_TTY_CONFIG",)),
    Rule(_names("get_mempolicy mbind set_mempolicy set_mempolicy_home_node"), caps=("CAP_SYS_NICE",)),
    Rule(("syslog",), caps=("CAP_SYSLOG",)),
    Rule(("bpf",), caps=("CAP_BPF",)),
    Rule(("perf_event_open",), caps=("CAP_PERFMON",)),
)
# Everything else: EPERM (the profile's defaultAction SCMP_ACT_ERRNO, defaultErrnoRet 1).
DEFAULT_ERRNO = errno.EPERM


def kernel_version(release: str | None = None) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def applicable_rules(native_arch: str, capabilities: frozenset[int],
                     kernel: tuple[int, int]) -> tuple[Rule, ...]:
    """The rules setupSeccomp keeps for a step with this bounding set on this host."""
    def has(cap: str) -> bool:
        return CAPABILITY_NUMBERS[cap] in capabilities

    kept = []
    for rule in DOCKER_DEFAULT_RULES:
        if native_arch in rule.without_arches or any(has(cap) for cap in rule.without_caps):
            continue
        if rule.arches and native_arch not in rule.arches:
            continue
        if not all(has(cap) for cap in rule.caps):
            continue
        if rule.min_kernel is not None and kernel < rule.min_kernel:
            continue
        kept.append(rule)
    return tuple(kept)
