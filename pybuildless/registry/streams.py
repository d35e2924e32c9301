"""Response bodies read straight off the socket: no Content-Encoding decoding
(moby#17595), network faults turned into ``IncompleteBodyError``, and blob streams
that resume a dropped connection with ``Range``."""

from __future__ import annotations

import logging
from typing import Any, Callable

import requests
import urllib3

from pybuildless.errors import RegistryError
from pybuildless.registry.verify import CHUNK

logger = logging.getLogger(__name__)


class IncompleteBodyError(RegistryError):
    """The connection dropped while a body was being read (after the transport's own retries)."""


def read_exactly(f, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at EOF): file objects may return short reads."""
    parts, got = [], 0
    while got < n:
        data = f.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class NetworkStream:
    """The raw body: no Content-Encoding decoding (moby#17595), network faults as RegistryError."""

    def __init__(self, resp, what: str) -> None:
        self._resp = resp
        self._what = what
        self._count = 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._resp.raw.read(n if n and n > 0 else CHUNK, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError, requests.RequestException) as e:
            raise IncompleteBodyError(f"{self._what}: connection lost after {self._count} bytes "
                                      f"({type(e).__name__})", temporary=True) from None
        self._count += len(data)
        return data

    def read_all(self, limit: int) -> bytes:
        parts, got = [], 0
        while got < limit and (data := self.read(min(CHUNK, limit - got))):
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def close(self) -> None:
        self._resp.close()


class ResumingStream:
    """Raw blob bytes that survive dropped connections: the rest is asked for again with
    ``Range`` (a 200 answer means starting over, so the bytes already passed on are skipped).
    Verification happens above, in the VerifyingReader, over the whole stream."""

    def __init__(self, open_from: Callable[[int], tuple[Any, bool]], size: int, what: str, *, retries: int,
                 sleep: Callable[[float], None]) -> None:
        """``open_from(offset)`` sends the GET (with ``Range`` when offset > 0) and returns
        (response, whether the range was honoured)."""
        self._open_from, self._size, self._what = open_from, size, what
        self._offset = 0
        self._retries = max(0, retries)
        self._sleep = sleep
        self._resp, _ = open_from(0)

    def read(self, n: int = -1) -> bytes:
        n = n if n and n > 0 else CHUNK
        while True:
            try:
                data = self._resp.raw.read(n, decode_content=False)
                if data or self._offset >= self._size:
                    self._offset += len(data)
                    return data
                problem = f"body ended after {self._offset} of {self._size} bytes"
            except (urllib3.exceptions.HTTPError, OSError, requests.RequestException) as e:
                problem = f"connection lost after {self._offset} bytes ({type(e).__name__})"
            self._reconnect(problem)

    def _reconnect(self, problem: str) -> None:
        self._resp.close()
        if self._retries <= 0:
            raise IncompleteBodyError(f"{self._what}: {problem}", temporary=True)
        self._retries -= 1
        logger.warning("%s: %s; resuming", self._what, problem)
        self._sleep(0.2)
        self._resp, partial = self._open_from(self._offset)
        if not partial:  # the whole blob again: skip what was already passed on
            skip = self._offset
            while skip > 0:
                data = self._resp.raw.read(min(CHUNK, skip), decode_content=False)
                if not data:
                    raise IncompleteBodyError(f"{self._what}: body ended while skipping to byte {self._offset}",
                                              temporary=True)
                skip -= len(data)

    def close(self) -> None:
        self._resp.close()
