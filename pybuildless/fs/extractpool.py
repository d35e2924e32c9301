"""Helper threads for the extractor: creating files and reading ahead in the layer stream.

Creating an inode costs tens of microseconds of kernel time on ext4 (far more than the Python
around it), and Python releases the GIL for every system call: entries handed to a few threads
are created side by side, on both cores, while the extractor's thread parses the next headers.

``WriterPool`` runs creations that cannot interfere with each other or with what the extractor
does meanwhile: the extractor only hands it new names in directories it made itself in this
layer (``fs.extract``'s fresh mode), and waits for it (``drain``) before anything else.
``ReadAhead`` reads the layer stream in a thread of its own, so decompression, both digests and
the download run beside the parsing.
"""

from __future__ import annotations

import os
import queue
import tarfile
import threading
from typing import BinaryIO, Callable

from pybuildless.fs import entrymeta

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class JobFailed(Exception):
    """A job of the pool failed: ``name`` is its entry, ``error`` what it raised."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(name, error)
        self.name = name
        self.error = error


class WriterPool:
    """Runs ``fn(*args)`` jobs in ``threads`` threads; at most ``max_bytes`` of data waits at once.

    Jobs with the same ``key`` (the extractor's: the directory they create in) run in the same
    thread, in order: creations in one directory take its lock in the kernel, and threads
    contending for it would spin there rather than wait.
    The first failure is raised (as JobFailed) by the next ``submit`` or ``drain``; jobs after it
    are dropped.
    """

    def __init__(self, threads: int, max_bytes: int, max_jobs: int) -> None:
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(threads)]
        self._cond = threading.Condition()
        self._pending = 0
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_jobs = max_jobs
        self._failed: JobFailed | None = None
        self._threads = [threading.Thread(target=self._work, args=(q,), name=f"extract-{i}", daemon=True)
                         for i, q in enumerate(self._queues)]
        for t in self._threads:
            t.start()

    def submit(self, key: int, name: str, nbytes: int, fn: Callable, *args) -> None:
        with self._cond:
            # a job bigger than the budget still goes, alone
            while self._failed is None and self._pending and (
                    self._bytes + nbytes > self._max_bytes or self._pending >= self._max_jobs):
                self._cond.wait()
            if self._failed is not None:
                raise self._failed
            self._pending += 1
            self._bytes += nbytes
        self._queues[key % len(self._queues)].put((name, nbytes, fn, args))

    def drain(self) -> None:
        """Wait for every job submitted so far; raise the first failure."""
        with self._cond:
            while self._pending:
                self._cond.wait()
            if self._failed is not None:
                raise self._failed

    def close(self) -> None:
        """Stop the threads once the jobs already queued are done (or dropped after a failure)."""
        threads, self._threads = self._threads, []
        for q in self._queues[:len(threads)]:
            q.put(None)
        for t in threads:
            t.join()

    def abort(self) -> None:
        """Drop the jobs not started yet, wait for the others, stop the threads."""
        with self._cond:
            if self._failed is None:
                self._failed = JobFailed("", RuntimeError("extraction stopped"))
        self.close()

    def _work(self, jobs: queue.SimpleQueue) -> None:
        while (job := jobs.get()) is not None:
            name, nbytes, fn, args = job
            failure = None
            if self._failed is None:
                try:
                    fn(*args)
                except BaseException as e:  # noqa: BLE001 - handed to the extractor's thread
                    failure = JobFailed(name, e)
            with self._cond:
                if failure is not None and self._failed is None:
                    self._failed = failure
                self._pending -= 1
                self._bytes -= nbytes
                self._cond.notify_all()


_EOF = object()


class ReadAhead:
    """``source`` read in ``chunk``-sized pieces by a thread, at most ``depth`` pieces ahead.

    ``read`` gives the next piece whatever size is asked (``TarStream`` takes what it needs), b""
    at the end; an error of the source is raised by the ``read`` that reaches it. ``close`` stops
    the thread (it may be blocked on a full queue: closing drains it).
    """

    def __init__(self, source: BinaryIO, chunk: int, depth: int) -> None:
        self._source = source
        self._chunk = chunk
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = False
        self._done = False
        self._thread = threading.Thread(target=self._run, name="extract-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop:
                data = self._source.read(self._chunk)
                if not data:
                    break
                self._queue.put(data)
            self._queue.put(_EOF)
        except BaseException as e:  # noqa: BLE001 - raised in the reader's thread
            self._queue.put(e)

    def read(self, _size: int = -1) -> bytes:
        if self._done:
            return b""
        item = self._queue.get()
        if isinstance(item, bytes):
            return item
        self._done = True
        if item is _EOF:
            return b""
        raise item

    def close(self) -> None:
        self._stop = True
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass


# -- the jobs ----------------------------------------------------------------------------

def member_data(tar: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    """The data of a regular, non-sparse member, read whole from the stream."""
    tar.fileobj.seek(m.offset_data)
    data = tar.fileobj.read(m.size)
    if len(data) != m.size:
        raise tarfile.ReadError("unexpected end of data")
    return data


def new_file(pfd: int, base: str, data: bytes, m: tarfile.TarInfo, same_owner: bool) -> None:
    fd = os.open(base, _NEW_FILE, 0o600, dir_fd=pfd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        entrymeta.apply_to_file(fd, m, same_owner=same_owner, fresh=True)
    finally:
        os.close(fd)


def new_symlink(pfd: int, base: str, m: tarfile.TarInfo, same_owner: bool) -> None:
    os.symlink(m.linkname, base, dir_fd=pfd)  # target verbatim, resolved only at use
    entrymeta.apply_to_symlink(pfd, base, m, same_owner=same_owner)
