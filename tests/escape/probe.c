/* Escape probes for the RUN sandbox: each subcommand tries one known way out
 * of a container and prints one line
 *
 *     PROBE <case> blocked <why>     the attempt failed (errno name, or what was seen)
 *     PROBE <case> ESCAPED <what>    it worked
 *
 * Every attempt is harmless if it succeeds: privileged syscalls get arguments
 * the kernel rejects *after* its permission check (so EPERM means "refused",
 * EINVAL/ENOENT/EFAULT means "the caller had the power"), files are opened for
 * writing but never written, a ptrace attach is detached at once.
 * Built with gcc -static at test time and copied into a busybox image.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>

static int blocked(const char *name, const char *why) { printf("PROBE %s blocked %s\n", name, why); return 0; }
static int escaped(const char *name, const char *what) { printf("PROBE %s ESCAPED %s\n", name, what); return 0; }
static int by_errno(const char *name, int ok, int err) {
    return ok ? escaped(name, "succeeded") : blocked(name, strerrorname_np(err));
}
/* For syscalls called with arguments that fail only after the permission check. */
static int privileged(const char *name, long rc, int err) {
    if (rc >= 0) return escaped(name, "succeeded");
    if (err == EPERM || err == EACCES || err == ENOSYS) return blocked(name, strerrorname_np(err));
    char what[80];
    snprintf(what, sizeof what, "permission-check-passed:%s", strerrorname_np(err));
    return escaped(name, what);
}

static int open_for_write(const char *name, const char *path) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) { close(fd); char w[300]; snprintf(w, sizeof w, "writable:%s", path); return escaped(name, w); }
    char w[300]; snprintf(w, sizeof w, "%s:%s", path, strerrorname_np(errno));
    return blocked(name, w);
}

/* Every file under DIR (one level of subdirectories) that opens for writing. */
static int writable_under(const char *name, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return blocked(name, strerrorname_np(errno));
    struct dirent *e; int found = 0, tried = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[512]; snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) || !S_ISREG(st.st_mode) || !(st.st_mode & 0222)) continue;
        tried++;
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) { close(fd); printf("PROBE %s ESCAPED writable:%s\n", name, p); found++; }
    }
    closedir(d);
    if (!found) { char w[64]; snprintf(w, sizeof w, "none-of-%d-writable", tried); blocked(name, w); }
    return 0;
}

static int read_some(const char *name, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { char w[300]; snprintf(w, sizeof w, "%s:%s", path, strerrorname_np(errno)); return blocked(name, w); }
    char buf[64]; ssize_t n = read(fd, buf, sizeof buf); int err = errno; close(fd);
    char w[300];
    if (n > 0) { snprintf(w, sizeof w, "read-%zd-bytes:%s", n, path); return escaped(name, w); }
    snprintf(w, sizeof w, "%s:%s", path, n == 0 ? "empty" : strerrorname_np(err));
    return blocked(name, w);
}

static int contains(const char *buf, size_t n, const char *needle) {
    return memmem(buf, n, needle, strlen(needle)) != NULL;
}

/* Look for SECRET in every process's environ, cmdline and open files. */
static int scan_proc(const char *secret) {
    DIR *d = opendir("/proc");
    if (!d) return blocked("proc_secret", "no-proc");
    struct dirent *e; int found = 0, pids = 0;
    static char buf[1 << 16];
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        pids++;
        const char *files[] = {"environ", "cmdline", "comm", "status", "stack", "auxv", NULL};
        for (int i = 0; files[i]; i++) {
            char p[300]; snprintf(p, sizeof p, "/proc/%s/%s", e->d_name, files[i]);
            int fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
            if (fd < 0) continue;
            ssize_t n = read(fd, buf, sizeof buf); close(fd);
            if (n > 0 && contains(buf, n, secret)) { printf("PROBE proc_secret ESCAPED in:%s\n", p); found++; }
        }
        char fddir[300]; snprintf(fddir, sizeof fddir, "/proc/%s/fd", e->d_name);
        DIR *fdd = opendir(fddir);
        if (!fdd) continue;
        struct dirent *f;
        while ((f = readdir(fdd))) {
            if (f->d_name[0] == '.') continue;
            char p[600]; snprintf(p, sizeof p, "%s/%s", fddir, f->d_name);
            struct stat st;
            if (stat(p, &st) || !S_ISREG(st.st_mode)) continue;  /* never block on pipes or ttys */
            int fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
            if (fd < 0) continue;
            ssize_t n = pread(fd, buf, sizeof buf, 0); close(fd);
            if (n > 0 && contains(buf, n, secret)) { printf("PROBE proc_secret ESCAPED in:%s\n", p); found++; }
        }
        closedir(fdd);
    }
    closedir(d);
    if (!found) { char w[64]; snprintf(w, sizeof w, "not-in-%d-processes", pids); blocked("proc_secret", w); }
    return 0;
}

/* The executor must not be visible: no process outside the step's own tree.
 * Lists every pid with its command name. */
static int list_pids(void) {
    DIR *d = opendir("/proc");
    if (!d) return blocked("pid1", "no-proc");
    struct dirent *e;
    printf("PIDS");
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char p[300], comm[64] = "?"; snprintf(p, sizeof p, "/proc/%s/comm", e->d_name);
        FILE *f = fopen(p, "r");
        if (f) { if (fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\n")] = 0; fclose(f); }
        printf(" %s:%s", e->d_name, comm);
    }
    printf("\n");
    closedir(d);
    return 0;
}

static int shocker(void) {
    /* CVE-2014-3519 style: a file handle for inode 2 (the root of an ext4/xfs
     * filesystem) opened through any fd on the same filesystem. */
    struct { struct file_handle h; unsigned char bytes[8]; } fh;
    int mount_fd = open("/", O_RDONLY | O_DIRECTORY);
    if (mount_fd < 0) return blocked("open_by_handle_at", strerrorname_np(errno));
    /* first the handle of a file we may see, as the attack does to learn the type */
    struct { struct file_handle h; unsigned char bytes[128]; } own;
    own.h.handle_bytes = 128; int mnt_id;
    long rc = syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &own.h, &mnt_id, 0);
    fh.h.handle_bytes = 8; fh.h.handle_type = 1;  /* FILEID_INO32_GEN */
    unsigned int ino = 2, gen = 0;
    memcpy(fh.bytes, &ino, 4); memcpy(fh.bytes + 4, &gen, 4);
    if (rc == 0) fh.h.handle_type = own.h.handle_type == 1 ? 1 : own.h.handle_type;
    rc = syscall(SYS_open_by_handle_at, mount_fd, &fh.h, O_RDONLY);
    int err = errno;
    if (rc >= 0) { close(rc); return escaped("open_by_handle_at", "opened-inode-2"); }
    /* EPERM: no CAP_DAC_READ_SEARCH or seccomp; anything else: the check passed */
    return privileged("open_by_handle_at", -1, err);
}

static int double_chroot(const char *marker) {
    mkdir("/tmp", 0777);
    mkdir("/tmp/dc", 0755);
    if (chroot("/tmp/dc") != 0) return blocked("double_chroot", strerrorname_np(errno));
    for (int i = 0; i < 256; i++) if (chdir("..") != 0) break;
    if (chroot(".") != 0) return blocked("double_chroot", strerrorname_np(errno));
    struct stat st;
    if (stat(marker, &st) == 0) return escaped("double_chroot", "host-marker-visible");
    return blocked("double_chroot", "still-in-step-root");
}

static int unshare_mount(void) {
    uid_t uid = getuid(); gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return blocked("unshare_userns_mount", strerrorname_np(errno));
    char map[64]; int fd;
    snprintf(map, sizeof map, "0 %u 1", uid);
    if ((fd = open("/proc/self/uid_map", O_WRONLY)) >= 0) { if (write(fd, map, strlen(map)) < 0) {} close(fd); }
    if ((fd = open("/proc/self/setgroups", O_WRONLY)) >= 0) { if (write(fd, "deny", 4) < 0) {} close(fd); }
    snprintf(map, sizeof map, "0 %u 1", gid);
    if ((fd = open("/proc/self/gid_map", O_WRONLY)) >= 0) { if (write(fd, map, strlen(map)) < 0) {} close(fd); }
    mkdir("/tmp", 0777); mkdir("/tmp/um", 0755);
    if (mount("none", "/tmp/um", "tmpfs", 0, NULL) == 0) return escaped("unshare_userns_mount", "mounted-tmpfs");
    char w[64]; snprintf(w, sizeof w, "unshared-but-mount:%s", strerrorname_np(errno));
    return blocked("unshare_userns_mount", w);
}

static int try_ptrace(const char *name, pid_t pid) {
    if (pid <= 0) return blocked(name, "no-target");
    if (pid == getpid()) return blocked(name, "target-is-self");
    long rc = ptrace(PTRACE_ATTACH, pid, 0, 0);
    int err = errno;
    if (rc == 0) { waitpid(pid, NULL, __WALL); ptrace(PTRACE_DETACH, pid, 0, 0); return escaped(name, "attached"); }
    /* reading its memory without attaching */
    char b[8]; struct iovec local = {b, sizeof b}, remote = {(void *)0x400000, sizeof b};
    long n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n < 0 && errno == EPERM) return blocked(name, strerrorname_np(err));
    if (n >= 0) return escaped(name, "process_vm_readv");
    char w[80]; snprintf(w, sizeof w, "%s/vm_readv:%s", strerrorname_np(err), strerrorname_np(errno));
    return blocked(name, w);
}

static int exe_write(const char *name, const char *path) {
    char target[512] = ""; ssize_t n = readlink(path, target, sizeof target - 1);
    if (n > 0) target[n] = 0;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) { close(fd); char w[600]; snprintf(w, sizeof w, "writable:%s", target); return escaped(name, w); }
    int err = errno;
    /* CVE-2019-5736 style: hold an O_PATH handle and reopen it for writing */
    int pfd = open(path, O_PATH | O_CLOEXEC);
    if (pfd >= 0) {
        char via[64]; snprintf(via, sizeof via, "/proc/self/fd/%d", pfd);
        int wfd = open(via, O_WRONLY | O_CLOEXEC);
        if (wfd >= 0) {
            close(wfd); close(pfd);
            char w[600]; snprintf(w, sizeof w, "reopened-writable:%s", target);
            return escaped(name, w);
        }
        close(pfd);
    }
    char w[600]; snprintf(w, sizeof w, "%s(target=%s)", strerrorname_np(err), n > 0 ? target : "unreadable");
    return blocked(name, w);
}

/* CVE-2024-21626 class: a descriptor or working directory inherited from outside the root.
 * Climb from each open directory (and from the cwd) and see whether we land outside "/". */
static int leaked_fds(void) {
    struct stat root, here;
    if (stat("/", &root) != 0) return blocked("leaked_fds", "no-root");
    int outside = 0, dirs = 0;
    int start = open(".", O_RDONLY | O_DIRECTORY);
    for (int fd = -1; fd < 1024; fd++) {
        int from = fd < 0 ? start : fd;
        struct stat st;
        if (from < 0 || fstat(from, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        dirs++;
        if (fchdir(from) != 0) continue;
        for (int i = 0; i < 64; i++) if (chdir("..") != 0) break;
        if (stat(".", &here) == 0 && (here.st_dev != root.st_dev || here.st_ino != root.st_ino)) {
            printf("PROBE leaked_fds ESCAPED %s-%d-climbs-outside-the-root\n", fd < 0 ? "cwd" : "fd", fd);
            outside++;
        }
    }
    if (!outside) { char w[64]; snprintf(w, sizeof w, "%d-directories-all-inside", dirs); blocked("leaked_fds", w); }
    return 0;
}

/* Another process's root (/proc/<pid>/root) that is not ours leads to the host's files. */
static int proc_roots(const char *marker) {
    DIR *d = opendir("/proc");
    if (!d) return blocked("proc_roots", "no-proc");
    struct dirent *e; int found = 0, pids = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        pids++;
        char p[600]; snprintf(p, sizeof p, "/proc/%s/root%s", e->d_name, marker);
        struct stat st;
        if (stat(p, &st) == 0 && found++ < 3)
            printf("PROBE proc_roots ESCAPED host-marker-via:/proc/%s/root\n", e->d_name);
    }
    closedir(d);
    if (!found) { char w[64]; snprintf(w, sizeof w, "marker-not-under-%d-roots", pids); blocked("proc_roots", w); }
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) { fprintf(stderr, "usage: probe CASE [ARG]\n"); return 2; }
    const char *c = argv[1], *arg = argc > 2 ? argv[2] : "";
    long rc; int err;
#define CALL(expr) (errno = 0, rc = (long)(expr), err = errno)
    if (!strcmp(c, "core_pattern")) return open_for_write(c, "/proc/sys/kernel/core_pattern");
    if (!strcmp(c, "sysrq_trigger")) return open_for_write(c, "/proc/sysrq-trigger");
    if (!strcmp(c, "proc_sys_vm")) return writable_under(c, "/proc/sys/vm");
    if (!strcmp(c, "proc_sys_kernel")) return writable_under(c, "/proc/sys/kernel");
    if (!strcmp(c, "sys_kernel")) {
        struct stat st;
        if (stat("/sys/kernel/uevent_helper", &st) == 0)
            open_for_write("sys_kernel_uevent_helper", "/sys/kernel/uevent_helper");
        return writable_under(c, "/sys/kernel");
    }
    if (!strcmp(c, "kcore")) return read_some(c, "/proc/kcore");
    if (!strcmp(c, "masked_paths")) {
        const char *paths[] = {"/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/interrupts",
                               "/proc/latency_stats", "/proc/timer_stats", NULL};
        for (int i = 0; paths[i]; i++) read_some(c, paths[i]);
        return 0;
    }
    if (!strcmp(c, "proc_secret")) {
        /* given in two halves, so that the whole never appears in this step's own argv */
        if (argc < 4) { fprintf(stderr, "probe: proc_secret HALF1 HALF2\n"); return 2; }
        static char secret[256];
        snprintf(secret, sizeof secret, "%s%s", argv[2], argv[3]);
        return scan_proc(secret);
    }
    if (!strcmp(c, "pids")) return list_pids();
    if (!strcmp(c, "mount")) {
        mkdir("/tmp", 0777); mkdir("/tmp/m", 0755);
        CALL(mount("none", "/tmp/m", "tmpfs", 0, NULL));
        return by_errno(c, rc == 0, err);
    }
    if (!strcmp(c, "leaked_fds")) return leaked_fds();
    if (!strcmp(c, "proc_roots")) return proc_roots(arg);
    if (!strcmp(c, "mount_cgroup")) {
        /* CVE-2022-0492: a cgroup v1 hierarchy mounted to write its release_agent (never written here) */
        mkdir("/tmp", 0777); mkdir("/tmp/cg", 0755);
        CALL(mount("cgroup", "/tmp/cg", "cgroup", 0, "rdma"));
        if (rc != 0) CALL(mount("cgroup", "/tmp/cg", "cgroup", 0, "memory"));
        return by_errno(c, rc == 0, err);
    }
    if (!strcmp(c, "mount_proc")) {
        mkdir("/tmp", 0777); mkdir("/tmp/p", 0755);
        CALL(mount("proc", "/tmp/p", "proc", 0, NULL));
        return by_errno(c, rc == 0, err);
    }
    if (!strcmp(c, "umount")) { CALL(umount2("/etc", MNT_DETACH)); return privileged(c, rc, err); }
    if (!strcmp(c, "umount_masked")) {
        /* the first masked /proc file this kernel has (kcore and sched_debug are optional) */
        const char *paths[] = {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts", NULL};
        struct stat st;
        for (int i = 0; paths[i]; i++) {
            if (stat(paths[i], &st) != 0) continue;
            CALL(umount2(paths[i], MNT_DETACH));
            return privileged(c, rc, err);
        }
        return blocked(c, "no-masked-path-present");
    }
    if (!strcmp(c, "pivot_root")) {
        CALL(syscall(SYS_pivot_root, "/nonexistent-new", "/nonexistent-old"));
        return privileged(c, rc, err);
    }
    if (!strcmp(c, "double_chroot")) return double_chroot(arg);
    if (!strcmp(c, "unshare_userns_mount")) return unshare_mount();
    if (!strcmp(c, "mknod_block")) {
        mkdir("/tmp", 0777);
        /* the node for this machine's disk (virtio: 253:0); creating it is what Docker allows
         * (CAP_MKNOD), opening it is what its device cgroup refuses */
        CALL(mknod("/tmp/blk", S_IFBLK | 0600, makedev(253, 0)));
        if (rc != 0) return blocked(c, strerrorname_np(err));
        int fd = open("/tmp/blk", O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        err = errno;
        unlink("/tmp/blk");
        if (fd >= 0) { close(fd); return escaped(c, "created-and-opened"); }
        char w[64]; snprintf(w, sizeof w, "created-but-open:%s", strerrorname_np(err));
        return blocked(c, w);
    }
    if (!strcmp(c, "host_devices")) {
        const char *devs[] = {"/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/mem", "/dev/kmem", "/dev/port",
                              "/dev/kmsg", "/dev/kvm", "/dev/zram0", "/dev/loop0", NULL};
        int found = 0;
        for (int i = 0; devs[i]; i++) {
            int fd = open(devs[i], O_RDONLY | O_CLOEXEC | O_NONBLOCK);
            if (fd >= 0) { close(fd); printf("PROBE %s ESCAPED opened:%s\n", c, devs[i]); found++; }
        }
        return found ? 0 : blocked(c, "none-opened");
    }
    if (!strcmp(c, "open_by_handle_at")) return shocker();
    if (!strcmp(c, "keyctl")) {
        /* KEYCTL_GET_KEYRING_ID(KEY_SPEC_USER_KEYRING): the uid's keyring, shared with the host's root */
        CALL(syscall(SYS_keyctl, 0, -4, 0));
        if (rc >= 0) return escaped(c, "user-keyring-reachable");
        return blocked(c, strerrorname_np(err));
    }
    if (!strcmp(c, "add_key")) {
        CALL(syscall(SYS_add_key, "user", "escape-probe", "x", 1, -4));
        if (rc >= 0) syscall(SYS_keyctl, 21, rc);  /* KEYCTL_INVALIDATE: leave the keyring as it was */
        return by_errno(c, rc >= 0, err);
    }
    if (!strcmp(c, "ptrace_host")) return try_ptrace(c, (pid_t)atoi(arg));
    if (!strcmp(c, "ptrace_init")) {
        if (getppid() == 1) return blocked(c, "init-is-my-parent-shell");
        return try_ptrace(c, 1);
    }
    if (!strcmp(c, "bpf")) {
        union bpf_attr a; memset(&a, 0, sizeof a);
        a.map_type = BPF_MAP_TYPE_ARRAY; a.key_size = 4; a.value_size = 4; a.max_entries = 1;
        CALL(syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a));
        if (rc >= 0) close(rc);
        return by_errno(c, rc >= 0, err);
    }
    if (!strcmp(c, "perf_event_open")) {
        struct perf_event_attr a; memset(&a, 0, sizeof a);
        a.size = sizeof a; a.type = PERF_TYPE_SOFTWARE; a.config = PERF_COUNT_SW_CPU_CLOCK; a.disabled = 1;
        CALL(syscall(SYS_perf_event_open, &a, -1, 0, -1, 0));  /* every process on cpu 0, kernel included */
        if (rc >= 0) close(rc);
        return by_errno(c, rc >= 0, err);
    }
    if (!strcmp(c, "init_module")) { CALL(syscall(SYS_init_module, NULL, 0, "")); return privileged(c, rc, err); }
    if (!strcmp(c, "finit_module")) { CALL(syscall(SYS_finit_module, -1, "", 0)); return privileged(c, rc, err); }
    if (!strcmp(c, "kexec_load")) {  /* invalid flags: EINVAL after the check */
        CALL(syscall(SYS_kexec_load, 0, 0, NULL, 0xdeadbeefUL));
        return privileged(c, rc, err);
    }
    if (!strcmp(c, "reboot")) {  /* a wrong second magic number: EINVAL after the check */
        CALL(syscall(SYS_reboot, 0xfee1dead, 0x0badcafe, 0, NULL));
        return privileged(c, rc, err);
    }
    if (!strcmp(c, "settimeofday")) {
        struct timezone tz = {.tz_minuteswest = 100000, .tz_dsttime = 0};  /* out of range: EINVAL after the check */
        CALL(syscall(SYS_settimeofday, NULL, &tz)); return privileged(c, rc, err);
    }
    if (!strcmp(c, "swapon")) { CALL(syscall(SYS_swapon, "/nonexistent-swap", 0)); return privileged(c, rc, err); }
    if (!strcmp(c, "self_exe")) return exe_write(c, "/proc/self/exe");
    if (!strcmp(c, "init_exe")) return exe_write(c, "/proc/1/exe");
    if (!strcmp(c, "init_environ")) return read_some(c, "/proc/1/environ");
    fprintf(stderr, "probe: unknown case %s\n", c);
    return 2;
}
