"""A reader that hashes and counts what passes through and checks both at EOF.

Never trusts the consumer to read to the end: ``close()`` drains the rest (tar
readers stop at the end-of-archive blocks, so trailing bytes would otherwise
go unhashed) unless ``abandon()`` was called. ``report_to`` passes the bytes read
on to a live progress display (``pybuildless.transfer``).
"""

from __future__ import annotations

import io
from typing import BinaryIO, Callable

from pybuildless import transfer
from pybuildless.errors import DigestMismatchError
from pybuildless.image.descriptor import Digest

CHUNK = 1 << 20


class VerifyingReader(io.RawIOBase):
    def __init__(
        self,
        source: BinaryIO,
        digest: Digest,
        size: int | None,
        *,
        what: str = "blob",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self.digest = digest
        self.size = size
        self.what = what
        self._hasher = digest.hasher()
        self._count = 0
        self._done = False
        self._failed = False
        self._abandoned = False
        self._on_close = on_close
        self._transfer: transfer.Transfer = transfer.NULL_TRANSFER

    def report_to(self, progress: transfer.Transfer) -> "VerifyingReader":
        """Count the bytes read into ``progress`` and finish it on close; returns self."""
        self._transfer = progress
        return self

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._done:
            return 0
        want = len(buffer)
        if self.size is not None:
            # Read one byte past the announced size so an over-long body is noticed.
            want = min(want, self.size - self._count + 1)
        try:
            data = self._source.read(max(want, 1))
        except BaseException:
            self._failed = True  # close() must not try to drain a broken stream
            raise
        if not data:
            self._finish()
            return 0
        self._count += len(data)
        if self.size is not None and self._count > self.size:
            self._done = True
            raise DigestMismatchError(f"{self.what}: more than the expected {self.size} bytes")
        self._hasher.update(data)
        n = len(data)
        buffer[:n] = data
        self._transfer.advance(n)
        return n

    def _finish(self) -> None:
        self._done = True
        if self.size is not None and self._count != self.size:
            # A short body is usually a dropped connection: worth another try.
            raise DigestMismatchError(f"{self.what}: got {self._count} bytes, expected {self.size}",
                                      temporary=self._count < self.size)
        got = Digest(self.digest.algorithm, self._hasher.hexdigest())
        if got != self.digest:
            raise DigestMismatchError(f"{self.what}: content digest {got} does not match {self.digest}")

    def drain(self) -> None:
        """Read and verify the rest."""
        while not self._done:
            if not self.read(CHUNK):
                break

    def abandon(self) -> None:
        """Close without draining (the caller already failed)."""
        self._abandoned = True
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._abandoned and not self._done and not self._failed:
                self.drain()
        finally:
            try:
                self._source.close()
            finally:
                self._transfer.finish()
                if self._on_close is not None:
                    self._on_close()
                super().close()
