/* Enter a jail the way a container runtime does (runc's pivot_root(".", ".")
 * then unmounting the old root): the host's tree is detached, so a double
 * chroot inside cannot climb back to it. Then keep only the capabilities named
 * on the command line in the bounding set and exec; root's permitted set after
 * exec is the bounding set, as in a container.
 *
 *     enter JAIL CAP_NUMBERS(comma-separated) PROGRAM ARGS...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static void die(const char *what) { fprintf(stderr, "enter: %s: %s\n", what, strerror(errno)); exit(125); }

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: enter JAIL CAPS PROGRAM ARGS...\n"); return 125; }
    int keep[64] = {0};
    for (char *s = strtok(argv[2], ","); s; s = strtok(NULL, ",")) keep[atoi(s) & 63] = 1;
    if (chdir(argv[1])) die("chdir");
    if (syscall(SYS_pivot_root, ".", ".")) die("pivot_root");
    if (umount2(".", MNT_DETACH)) die("umount old root");
    if (chdir("/")) die("chdir /");
    for (int cap = 0; cap < 64; cap++)
        if (!keep[cap] && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EINVAL) die("PR_CAPBSET_DROP");
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    execvp(argv[3], argv + 3);
    die(argv[3]);
}
