"""Removing a build's scratch trees without making the build wait for it.

On a disk with slow metadata every unlink costs about a millisecond, and a build
makes thousands of entries it throws away (a RUN's overlay upper dir, the stage
roots, the layer files). Removing them there and then is time the user waits for.

- ``discard(path)`` during a build: the tree is renamed into the trash directory
  of the work dir that holds it (one rename on the same filesystem), or removed
  at once when it lies in no registered work dir (in place, the root's own ``/``).
- ``dispose(work, wait=...)`` at the end: the work dir (trash included) is removed
  now when it is small or the caller must wait; else it is renamed aside as
  ``.pybuildless-trash-<pid>-<start time>-<random>`` and removed by a detached
  process (its own session, lowest CPU and idle I/O priority) so the build exits
  at once.
- A trash dir whose remover died (crash, killed container) is claimed (renamed to
  the claimer's own name, so two sweepers never share one) and removed by the next
  build's remover or ``pybuildless prune`` (``sweep``). The owner is alive when its
  pid exists *with the same start time*, so a reused pid never keeps garbage alive.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = ".pybuildless-trash-"
BIN_NAME = ".trash"  # inside a work dir: the trees the build gave up
# A work dir with at most this many entries is removed before the build exits (a few
# ms on most disks, under a second on the slowest): small builds leave nothing behind
# even for a moment; bigger ones hand their removal to the detached process.
SYNC_ENTRY_LIMIT = 1000

_work_dirs: set[str] = set()
_lock = threading.Lock()
_counter = itertools.count()


def register(work: Path) -> None:
    """Trees below ``work`` given to ``discard`` go to its trash from now on."""
    with _lock:
        _work_dirs.add(os.path.abspath(work))


def unregister(work: Path) -> None:
    with _lock:
        _work_dirs.discard(os.path.abspath(work))


def discard(path: Path) -> None:
    """Give up the tree at ``path`` (no mount may be left below it): moved into the trash of
    the registered work dir holding it, else removed now."""
    target = os.path.abspath(path)
    with _lock:
        holders = [w for w in _work_dirs if target.startswith(w + os.sep)]
    if holders:
        bin_dir = os.path.join(max(holders, key=len), BIN_NAME)
        try:
            os.makedirs(bin_dir, exist_ok=True)
            os.rename(target, os.path.join(bin_dir, f"{os.getpid()}-{next(_counter)}"))
            return
        except OSError as e:  # another filesystem below the work dir: removed as before
            log.debug("cannot move %s to the trash: %s", target, e)
    remove_tree(Path(target))


def remove_tree(path: Path) -> None:
    # the kernel leaves an overlay's work/work (mode 000) behind; rmtree copes as (namespace) root
    shutil.rmtree(path, ignore_errors=True)


# -- owners ---------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks after boot), None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # the name may hold spaces and parentheses
    return fields[19].decode() if len(fields) > 19 else None  # field 22 of proc(5)


def trash_name(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{PREFIX}{pid}-{_start_time(pid) or 0}-{os.urandom(4).hex()}"


def owner_alive(name: str) -> bool:
    """Whether the process named in the trash dir ``name`` still runs (same pid, same start)."""
    parts = name[len(PREFIX):].split("-")
    if not name.startswith(PREFIX) or len(parts) != 3 or not parts[0].isdigit():
        return True  # not ours to judge: never touched
    return _start_time(int(parts[0])) == parts[1]


def claim_stale(parent: Path) -> list[Path]:
    """The trash dirs in ``parent`` whose owner died, renamed to this process's own names."""
    try:
        names = [e.name for e in os.scandir(parent) if e.name.startswith(PREFIX) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    claimed = []
    for name in names:
        if owner_alive(name):
            continue
        mine = parent / trash_name()
        try:
            os.rename(parent / name, mine)  # only one claimer's rename finds it
        except OSError:
            continue
        claimed.append(mine)
    return claimed


def sweep(parent: Path) -> int:
    """Remove the trash dirs in ``parent`` whose owner died, now; returns how many."""
    stale = claim_stale(parent)
    for path in stale:
        remove_tree(path)
    return len(stale)


# -- the end of a build -----------------------------------------------------------------


def _count_up_to(path: Path, limit: int) -> int:
    """Entries below ``path``, counted up to ``limit`` + 1 (directory listings only)."""
    count, stack = 0, [os.fspath(path)]
    while stack and count <= limit:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    count += 1
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except OSError:
            continue
    return count


def dispose(work: Path, *, wait: bool) -> None:
    """Remove the build's work dir ``work`` (no mount left in it) and any stale trash next to it:
    now when ``wait`` or when it is small, else in a detached process."""
    unregister(work)
    parent = work.parent
    if wait or _count_up_to(work, SYNC_ENTRY_LIMIT) <= SYNC_ENTRY_LIMIT:
        remove_tree(work)
        if wait:
            sweep(parent)
            return
        if not any(not owner_alive(e.name) for e in _trash_entries(parent)):
            return
        work = None  # only stale trash left to remove, in the background
    aside = None
    if work is not None:
        aside = parent / trash_name()
        try:
            os.rename(work, aside)
        except OSError as e:
            log.debug("cannot rename %s aside: %s", work, e)
            remove_tree(work)
            return
    if _spawn_remover(aside, parent):
        log.debug("%s is removed in the background", aside or f"stale trash in {parent}")
        return
    if aside is not None:  # no process could be started: removed here
        remove_tree(aside)
    sweep(parent)


def _trash_entries(parent: Path) -> list[os.DirEntry]:
    try:
        return [e for e in os.scandir(parent) if e.name.startswith(PREFIX)]
    except OSError:
        return []


def _spawn_remover(aside: Path | None, parent: Path) -> bool:
    """A detached process (double fork, its own session) removes ``aside`` and the stale trash
    in ``parent``. Returns once it has renamed them to its own names (so no sweeper takes
    them while it lives); False when it could not start."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return False
    if pid == 0:  # pragma: no cover - the child: syscalls only, then _exit
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _detach(w)
            _lower_priority()
            targets = []
            if aside is not None:
                own = parent / trash_name()
                os.rename(aside, own)
                targets.append(own)
            targets += claim_stale(parent)
            os.write(w, b"1")
            os.close(w)
            for path in targets:
                remove_tree(path)
        except BaseException:  # noqa: BLE001 - nobody to tell; the next build sweeps what is left
            pass
        finally:
            os._exit(0)
    os.close(w)
    try:
        os.waitpid(pid, 0)
        started = os.read(r, 1) == b"1"
    finally:
        os.close(r)
    return started


def _detach(keep: int) -> None:
    """No inherited descriptor but ``keep``: a caller reading the build's output sees its end
    when the build exits, not when the removal does."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, keep)
    os.closerange(keep + 1, max(os.sysconf("SC_OPEN_MAX"), 1 << 16))  # close_range(2): one syscall


# ioprio_set(2) numbers where they are known; elsewhere only the CPU priority is lowered
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "riscv64": 30, "ppc64le": 273, "s390x": 282, "i686": 289}
_IOPRIO_CLASS_IDLE = 3 << 13  # IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0), linux/ioprio.h
_IOPRIO_WHO_PROCESS = 1


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except OSError:
        pass
    number = _IOPRIO_SET.get(os.uname().machine)
    if number is None:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).syscall(number, _IOPRIO_WHO_PROCESS, 0, _IOPRIO_CLASS_IDLE)
    except (OSError, AttributeError):
        pass
