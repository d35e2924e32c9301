"""Where the file system puts the inodes of a new unpack: away from those just deleted.

ext4 without a journal skips, for every new inode, each free inode of the group that was
deleted in the last ``vm.dirty_expire_centisecs`` (30 s by default), rescanning them from
the start of the group for each allocation (fs/ext4/ialloc.c ``find_inode_bit`` and
``recently_deleted``). Files and directories are allocated in their parent's group, so an
unpack right after a store entry or a stage root was removed (a cold build after a prune,
a CI job that cleans its workspace) paid a scan of thousands of just-freed inodes per file
created: measured here, 1.2-1.7 s of kernel time for a Debian layer of 6,127 entries
instead of 0.15-0.25 s.

The top-of-hierarchy attribute (``chattr +T``, ``FS_TOPDIR_FL``) on the store's temp area
makes ext4's Orlov allocator place each new unpack directory in a group of its own choice
(spread, with free inodes and blocks above average) instead of next to its parent, so one
unpack's inodes no longer land among the previous one's deleted inodes. Only a placement
hint: a file system without the attribute (tmpfs, overlay, btrfs, xfs) refuses it, and that
is fine.
"""

from __future__ import annotations

import array
import fcntl
import os

# linux/fs.h: _IOR('f', 1, long) and _IOW('f', 2, long) on 64-bit; the kernel reads an int
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def mark_top_dir(path: str | os.PathLike) -> bool:
    """Give directory ``path`` the top-of-hierarchy attribute; False where the file system
    has no such attribute or refuses it (never an error: it only guides placement)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        if flags[0] & FS_TOPDIR_FL:
            return True
        flags[0] |= FS_TOPDIR_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags, False)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
