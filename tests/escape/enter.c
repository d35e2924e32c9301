/* Enter a jail the way a container runtime does (runc's pivot_root(".", ".")
 * then unmounting the old root): the host's tree is detached, so a double
 * chroot inside cannot climb back to it. Then keep only the capabilities named
 * on the command line in the bounding set, load a seccomp filter if one is
 * given (a file of raw struct sock_filter entries) and exec; root's permitted
 * set after exec is the bounding set, as in a container.
 *
 * With UID:GID other than "-", it then becomes that user (no capabilities left
 * after exec), as `docker run --user` does, under no_new_privs (Kubernetes'
 * allowPrivilegeEscalation: false, which its restricted pod profile requires).
 *
 *     enter JAIL CAP_NUMBERS(comma-separated) SECCOMP_FILE|- UID:GID|- PROGRAM ARGS...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <grp.h>
#include <sys/syscall.h>
#include <unistd.h>

static void die(const char *what) { fprintf(stderr, "enter: %s: %s\n", what, strerror(errno)); exit(125); }

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: enter JAIL CAPS SECCOMP_FILE|- UID:GID|- PROGRAM ARGS...\n"); return 125; }
    static struct sock_filter filter[4096];
    struct sock_fprog prog = {0, filter};
    if (strcmp(argv[3], "-") != 0) {  /* read before the host's tree goes away */
        int fd = open(argv[3], O_RDONLY);
        if (fd < 0) die("seccomp file");
        ssize_t n = read(fd, filter, sizeof filter);
        if (n <= 0 || n % sizeof filter[0]) die("seccomp file size");
        prog.len = n / sizeof filter[0];
        close(fd);
    }
    int keep[64] = {0};
    for (char *s = strtok(argv[2], ","); s; s = strtok(NULL, ",")) keep[atoi(s) & 63] = 1;
    if (chdir(argv[1])) die("chdir");
    if (syscall(SYS_pivot_root, ".", ".")) die("pivot_root");
    if (umount2(".", MNT_DETACH)) die("umount old root");
    if (chdir("/")) die("chdir /");
    for (int cap = 0; cap < 64; cap++)
        if (!keep[cap] && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EINVAL) die("PR_CAPBSET_DROP");
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (prog.len && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0)) die("seccomp");
    if (strcmp(argv[4], "-") != 0) {
        unsigned uid, gid;
        if (sscanf(argv[4], "%u:%u", &uid, &gid) != 2) {
            fprintf(stderr, "enter: bad UID:GID %s\n", argv[4]);
            return 125;
        }
        gid_t groups[1] = {gid};
        if (setgroups(1, groups) || setgid(gid) || setuid(uid)) die("becoming the user");
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) die("no_new_privs");
    }
    execvp(argv[5], argv + 5);
    die(argv[5]);
}
