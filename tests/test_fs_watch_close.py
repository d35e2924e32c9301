"""Closing a DirWatcher releases its inotify instance (every watch with it) without the caller
waiting for the kernel's release; the process still waits for it at exit."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from pybuildless.fs.watch import DirWatcher

ROOT = Path(__file__).resolve().parent.parent


def _inotify_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                fds.add(int(name))
        except OSError:
            pass
    return fds


def test_close_releases_the_inotify_fd(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"d{i}").mkdir()
    before = _inotify_fds()
    watcher = DirWatcher(str(tmp_path))
    fd = watcher.fd
    assert fd in _inotify_fds() - before
    for i in range(20):
        watcher.add(f"d{i}")
    (tmp_path / "d3" / "f").write_bytes(b"x")
    dirty, _ = watcher.drain()
    assert {"d3", "d3/f"} <= dirty
    watcher.close()
    assert watcher.fd == -1
    watcher.close()  # a second close does nothing
    for thread in threading.enumerate():
        if thread.name == "inotify-close":
            thread.join(timeout=30)
    assert fd not in _inotify_fds()


def test_the_process_waits_for_the_close_at_exit(tmp_path: Path) -> None:
    # the closing thread is not a daemon: the interpreter joins it, and exit status stays 0
    code = ("import sys, threading\nfrom pybuildless.fs.watch import DirWatcher\n"
            f"w = DirWatcher({str(tmp_path)!r}); w.add(''); w.close()\n"
            "print(sorted(t.daemon for t in threading.enumerate() if t.name == 'inotify-close'))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("[False]", "[]")
