"""The capabilities a RUN step keeps, and the masks and drop lists the forked command applies.

The set is Docker's default for containers and build steps (moby daemon/pkg/oci/caps/defaults.go,
documented as the bounding set 00000000a80425fb) minus CAP_MKNOD: without a device cgroup a
RUN could mknod the host's disks and read them. The functions turn a set into what the kernel
takes (a 64-bit mask split in the two 32-bit words of capget/capset, the bounding-set entries
to drop with PR_CAPBSET_DROP); they run in the builder's tests and in the forked command.
"""

from __future__ import annotations

# Capability numbers (linux/capability.h).
CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID = 0, 1, 3, 4, 5, 6, 7
CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_SYS_CHROOT = 8, 10, 13, 18
CAP_SYS_ADMIN, CAP_MKNOD, CAP_AUDIT_WRITE, CAP_SETFCAP = 21, 27, 29, 31

RUN_CAPABILITIES = frozenset({
    CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP,
    CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_SYS_CHROOT, CAP_AUDIT_WRITE, CAP_SETFCAP,
})


def capability_mask(caps: frozenset[int]) -> int:
    """The set as the kernel prints it in /proc/PID/status (CapBnd, CapEff, ...)."""
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    return mask


def capset_words(caps: frozenset[int]) -> tuple[int, int]:
    """The mask as the two 32-bit words of capget/capset (_LINUX_CAPABILITY_VERSION_3)."""
    mask = capability_mask(caps)
    return mask & 0xFFFFFFFF, mask >> 32


def bounding_drops(keep: frozenset[int], last_cap: int) -> tuple[int, ...]:
    """Every capability this kernel knows (0 .. /proc/sys/kernel/cap_last_cap) not in ``keep``."""
    return tuple(cap for cap in range(last_cap + 1) if cap not in keep)
